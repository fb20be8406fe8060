"""The Transformer translation model: parity with HF Marian, Marian import, cache, builders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import MarianConfig, MarianMTModel

from tfm.nn import (
    TRANSFORMER_PRESETS,
    Seq2SeqTransformer,
    create_transformer,
    label_smoothed_cross_entropy,
    transformer_base,
    transformer_tiny,
)
from tfm.nn.convert import ConversionError, hf_marian_config, load_hf_marian

transformers.logging.set_verbosity_error()
VOCAB, PAD, EOS = 99, 98, 0


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is fastest (and does not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def marian_config(**kw) -> MarianConfig:
    args = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, forced_eos_token_id=EOS,
                activation_function="swish", scale_embedding=True)
    args.update(kw)
    return MarianConfig(**args)


def random_marian(**kw) -> MarianMTModel:
    """An HF Marian model in eval mode, every tensor perturbed (zero biases and unit norms hide
    nothing), and a non-zero ``final_logits_bias``."""
    torch.manual_seed(0)
    model = MarianMTModel(marian_config(**kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:  # the fixed sinusoids
                p.add_(torch.randn_like(p) * 0.05)
        model.final_logits_bias.normal_()
    return model


def batch(vocab: int = VOCAB):
    """Sources of different lengths, right-padded; targets starting with the decoder start (pad)."""
    g = torch.Generator().manual_seed(1)
    lens = [11, 4, 8, 1]
    src = torch.full((len(lens), max(lens)), PAD)
    for i, n in enumerate(lens):
        src[i, :n] = torch.randint(1, PAD, (n,), generator=g)
    tgt = torch.randint(1, min(vocab, PAD), (len(lens), 7), generator=g)
    tgt[:, 0] = PAD
    return src, tgt


def hf_logits(hf, src, tgt):
    with torch.no_grad():
        return hf(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=tgt).logits


@pytest.mark.parametrize("activation", ["swish", "relu", "gelu"])
def test_logits_match_hf_marian(activation):
    hf = random_marian(activation_function=activation)
    model = load_hf_marian(hf)
    src, tgt = batch()
    with torch.no_grad():
        ours = model(src, tgt)
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt), atol=1e-5, rtol=1e-5)
    assert model.share_embeddings and model.lm_head.weight is model.src_embed.tokens.weight
    assert model.bos_token_id == PAD and model.eos_token_id == EOS and not model.training


def test_separate_vocabularies_match_hf():
    hf = random_marian(share_encoder_decoder_embeddings=False, decoder_vocab_size=120)
    model = load_hf_marian(hf)
    assert model.tgt_vocab_size == 120 and model.vocab_size == VOCAB
    assert model.lm_head.weight is model.tgt_embed.tokens.weight
    assert model.tgt_embed.tokens.weight is not model.src_embed.tokens.weight
    src, tgt = batch(120)
    with torch.no_grad():
        ours = model(src, tgt)
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt), atol=1e-5, rtol=1e-5)


def test_untied_output_projection_is_kept_apart():
    hf = random_marian(tie_word_embeddings=False)
    assert not torch.equal(hf.lm_head.weight, hf.model.decoder.embed_tokens.weight)
    model = load_hf_marian(hf)
    assert not model.share_embeddings
    src, tgt = batch()
    with torch.no_grad():
        ours = model(src, tgt)
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt), atol=1e-5, rtol=1e-5)


def test_load_from_saved_folder_and_state_dict(tmp_path):
    hf = random_marian()
    hf.save_pretrained(tmp_path)
    src, tgt = batch()
    ref = hf_logits(hf, src, tgt)
    for model in (load_hf_marian(tmp_path), load_hf_marian(hf.state_dict(), config=hf.config),
                  load_hf_marian(tmp_path / "model.safetensors", config=tmp_path / "config.json")):
        with torch.no_grad():
            torch.testing.assert_close(model(src, tgt), ref, atol=1e-5, rtol=1e-5)
    dropout = load_hf_marian(tmp_path, dropout=0.0)
    assert dropout.transformer.encoder.blocks[0].dropout == 0.0


def test_import_errors_name_the_problem(tmp_path):
    hf = random_marian()
    with pytest.raises(ConversionError, match="pass config="):
        load_hf_marian(hf.state_dict())
    with pytest.raises(ConversionError, match="model_type='bert'"):
        hf_marian_config({**hf.config.to_dict(), "model_type": "bert"})
    with pytest.raises(ConversionError, match="decoder_attention_heads"):
        hf_marian_config({**hf.config.to_dict(), "decoder_attention_heads": 2})
    with pytest.raises(ConversionError, match="activation_function='tanh'"):
        hf_marian_config({**hf.config.to_dict(), "activation_function": "tanh"})
    with pytest.raises(ConversionError, match="does not fit"):
        load_hf_marian(hf.state_dict(), config={**hf.config.to_dict(), "encoder_layers": 3})
    with pytest.raises(ConversionError, match="does not exist"):
        load_hf_marian(tmp_path / "nowhere" / "x")
    learned = {k: v + 0.1 if "embed_positions" in k else v for k, v in hf.state_dict().items()}
    with pytest.raises(ConversionError, match="not the sinusoidal table"):
        load_hf_marian(learned, config=hf.config)


def test_cached_decoding_equals_teacher_forcing():
    torch.manual_seed(0)
    model = transformer_tiny(vocab_size=50, dropout=0.0, final_logits_bias=True).eval()
    src = torch.randint(1, 50, (3, 9))
    src[1, 5:] = 0
    tgt = torch.randint(1, 50, (3, 6))
    with torch.no_grad():
        full = model(src, tgt)
        mask = model.source_padding_mask(src)
        memory = model.encode(src, mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, :2], memory, mask, cache)]  # a prefix of two, then one at a time
        steps += [model.decode(tgt[:, t : t + 1], None, mask, cache) for t in range(2, 6)]
    assert cache.length == 6
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_source_padding_does_not_leak():
    """A sentence gives the same logits alone and padded in a batch; the mask is derived from the pad id."""
    torch.manual_seed(0)
    model = transformer_tiny(vocab_size=50, dropout=0.0).eval()
    src = torch.randint(1, 50, (2, 8))
    src[1, 3:] = 0
    tgt = torch.randint(1, 50, (2, 5))
    with torch.no_grad():
        both = model(src, tgt)
        alone = model(src[1:, :3], tgt[1:])
        explicit = model(src, tgt, src_padding_mask=src.eq(0))
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both, explicit)


def test_positions_give_logits_only_there():
    torch.manual_seed(0)
    model = transformer_tiny(vocab_size=50, dropout=0.0).eval()
    src, tgt = torch.randint(1, 50, (2, 7)), torch.randint(1, 50, (2, 5))
    pos = torch.tensor([0, 3, 6, 9])
    with torch.no_grad():
        torch.testing.assert_close(model(src, tgt, positions=pos), model(src, tgt).flatten(0, 1)[pos])


def test_tying_and_fairseq_init():
    torch.manual_seed(0)
    joint = Seq2SeqTransformer(60, pad_token_id=3, dim=32, encoder_layers=1, decoder_layers=1, num_heads=4, ffn_dim=64)
    assert joint.src_embed.tokens.weight is joint.tgt_embed.tokens.weight is joint.lm_head.weight
    assert joint.src_embed.tokens.weight[3].abs().sum() == 0
    assert abs(joint.src_embed.tokens.weight.std().item() - 32**-0.5) < 0.02
    qkv = joint.transformer.encoder.blocks[0].attn.qkv.weight
    bound = (6 / (32 + 32)) ** 0.5  # Xavier of a dim x dim matrix: q, k and v each
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.9 * bound
    assert joint.transformer.encoder.blocks[0].attn.qkv.bias.abs().sum() == 0
    apart = Seq2SeqTransformer(60, tgt_vocab_size=40, dim=32, encoder_layers=1, decoder_layers=1, num_heads=4, ffn_dim=64)
    assert apart.lm_head.weight is apart.tgt_embed.tokens.weight
    assert apart.src_embed.tokens.weight.shape == (60, 32) and apart.lm_head.weight.shape == (40, 32)
    untied = Seq2SeqTransformer(60, dim=32, encoder_layers=1, decoder_layers=1, num_heads=4, ffn_dim=64,
                                share_embeddings=False)
    assert len({id(untied.src_embed.tokens.weight), id(untied.tgt_embed.tokens.weight), id(untied.lm_head.weight)}) == 3
    torch.manual_seed(0)
    again = Seq2SeqTransformer(60, pad_token_id=3, dim=32, encoder_layers=1, decoder_layers=1, num_heads=4, ffn_dim=64)
    assert all(torch.equal(a, b) for a, b in zip(joint.state_dict().values(), again.state_dict().values()))
    again.reset_parameters()  # tied: the output projection is the embedding, its pad row stays zero
    assert again.lm_head.weight[3].abs().sum() == 0


def test_variants_pre_ln_gelu_learned_positions_train():
    torch.manual_seed(0)
    model = transformer_tiny(vocab_size=50, norm_first=True, activation="gelu", position="learned", max_positions=32)
    assert isinstance(model.transformer.encoder.norm, torch.nn.LayerNorm)
    assert isinstance(model.transformer.decoder.norm, torch.nn.LayerNorm)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    src = torch.randint(1, 50, (8, 6))
    tgt = torch.cat([torch.full((8, 1), 1), src], 1)  # learn to copy
    losses = []
    for _ in range(15):
        logits = model(src, tgt[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_builders():
    assert set(TRANSFORMER_PRESETS) == {"transformer_tiny", "transformer_small", "transformer_base", "transformer_big"}
    base = transformer_base(vocab_size=1000)
    assert (base.dim, len(base.transformer.encoder.blocks), len(base.transformer.decoder.blocks)) == (512, 6, 6)
    assert base.transformer.encoder.blocks[0].mlp.fc1.out_features == 2048
    assert base.num_parameters() == 44_138_496 + 1000 * 512  # shared embeddings counted once
    small = create_transformer("transformer_small", vocab_size=8000, pad_token_id=1, dropout=None)
    assert small.dim == 256 and small.pad_token_id == 1
    assert small.transformer.encoder.blocks[0].dropout == 0.1
    with pytest.raises(ValueError, match="unknown Transformer arch 'transformer_huge'"):
        create_transformer("transformer_huge", vocab_size=10)
    with pytest.raises(ValueError, match="needs vocab_size="):
        create_transformer("transformer_tiny")
    with pytest.raises(ValueError, match="eos_token_id=70 is outside"):
        transformer_tiny(vocab_size=50, eos_token_id=70)


def test_label_smoothed_cross_entropy_is_torchs():
    torch.manual_seed(0)
    logits = torch.randn(40, 30, requires_grad=True)
    target = torch.randint(0, 30, (40,))
    target[::6] = -100
    for eps in (0.0, 0.1):
        ours = label_smoothed_cross_entropy(logits, target, eps)
        ref = F.cross_entropy(logits, target, ignore_index=-100, label_smoothing=eps)
        torch.testing.assert_close(ours, ref)
        (g_ours,) = torch.autograd.grad(2 * ours, logits)
        (g_ref,) = torch.autograd.grad(2 * ref, logits)
        torch.testing.assert_close(g_ours, g_ref)
    with pytest.raises(ValueError, match="want"):
        label_smoothed_cross_entropy(logits[None], target)
