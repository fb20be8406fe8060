"""BERT on the shared backbone: parity with HF transformers, HF import, heads, builders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import BertConfig

from tfm.nn import (
    BERT_PRESETS,
    Bert,
    BertForPretraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    bert_base,
    create_bert,
    masked_positions,
    pretraining_loss,
)
from tfm.nn.convert import ConversionError, hf_bert_config, hf_bert_to_tfm, load_hf_bert
from tfm.tasks.base import param_groups

transformers.logging.set_verbosity_error()
VOCAB = 100


def hf_config(**kw) -> BertConfig:
    args = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=64, attn_implementation="sdpa")
    args.update(kw)
    return BertConfig(**args)


def random_hf(cls, **kw):
    """An HF BERT model in eval mode, every tensor perturbed so zero biases and unit norms hide nothing."""
    torch.manual_seed(0)
    model = cls(hf_config(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def saved(model, folder) -> str:
    model.save_pretrained(folder)
    return str(folder)


def batch():
    """Two segments, padding in two rows, masked-LM labels on some real tokens."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (4, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    mask[3, 9:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.zeros_like(ids)
    types[:, 12:] = 1
    types = types * mask
    labels = torch.full_like(ids, -100)
    chosen = (torch.rand(ids.shape, generator=g) < 0.2) & (mask == 1)
    chosen[:, 0] = False
    chosen[2, 5] = True
    labels[chosen] = ids[chosen]
    return ids, types, mask, labels, torch.tensor([0, 1, 1, 0])


def max_abs(a, b) -> float:
    return (a - b).abs().max().item()


def test_pretraining_parity_with_hf(tmp_path):
    ref = random_hf(transformers.BertForPreTraining)
    ours = load_hf_bert(saved(ref, tmp_path), BertForPretraining).eval()
    ids, types, mask, labels, nsp = batch()
    with torch.no_grad():
        r = ref(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels, next_sentence_label=nsp)
        pos = masked_positions(labels)
        out = ours(ids, types, mask, pos)
        total, mlm, nsp_loss = pretraining_loss(out.mlm_logits, labels.flatten()[pos], out.nsp_logits, nsp)
    assert out.mlm_logits.shape == (len(pos), VOCAB)
    assert max_abs(out.mlm_logits, r.prediction_logits.flatten(0, 1)[pos]) < 1e-5
    assert max_abs(out.nsp_logits, r.seq_relationship_logits) < 1e-5
    assert abs(total.item() - r.loss.item()) < 1e-5
    hf_mlm = F.cross_entropy(r.prediction_logits.flatten(0, 1), labels.flatten())
    assert abs(mlm.item() - hf_mlm.item()) < 1e-5
    assert abs(nsp_loss.item() - F.cross_entropy(r.seq_relationship_logits, nsp).item()) < 1e-5


def test_masked_positions_equal_the_full_sequence_gathered():
    torch.manual_seed(0)
    model = BertForPretraining(Bert(vocab_size=VOCAB, dim=32, depth=2, num_heads=4, max_positions=64)).eval()
    ids, types, mask, labels, nsp = batch()
    pos = masked_positions(labels)
    with torch.no_grad():
        full = model(ids, types, mask)
        at = model(ids, types, mask, pos)
        shuffled = pos[torch.randperm(len(pos))]  # any order of positions works
        at_shuffled = model(ids, types, mask, shuffled)
    assert full.mlm_logits.shape == (4, 24, VOCAB)
    assert max_abs(at.mlm_logits, full.mlm_logits.flatten(0, 1)[pos]) < 1e-5
    assert max_abs(at_shuffled.mlm_logits, full.mlm_logits.flatten(0, 1)[shuffled]) < 1e-5
    assert max_abs(at.nsp_logits, full.nsp_logits) < 1e-5
    # the loss on full-sequence logits with -100 labels is the same loss
    a = pretraining_loss(full.mlm_logits, labels, full.nsp_logits, nsp)
    b = pretraining_loss(at.mlm_logits, labels.flatten()[pos], at.nsp_logits, nsp)
    assert all(abs(x.item() - y.item()) < 1e-5 for x, y in zip(a, b, strict=True))


def test_no_masked_position_gives_a_finite_loss_and_gradients():
    model = BertForPretraining(Bert(vocab_size=VOCAB, dim=32, depth=1, num_heads=2, max_positions=64))
    ids, types, mask, _, nsp = batch()
    pos = masked_positions(torch.full_like(ids, -100))
    out = model(ids, types, mask, pos)
    total, mlm, _ = pretraining_loss(out.mlm_logits, ids.flatten()[pos], out.nsp_logits, nsp)
    assert out.mlm_logits.shape == (0, VOCAB) and mlm.item() == 0.0
    total.backward()
    assert torch.isfinite(model.bert.embeddings.tokens.weight.grad).all()


@pytest.mark.parametrize(
    "hf_cls, our_cls, kw",
    [
        (transformers.BertForSequenceClassification, BertForSequenceClassification, dict(num_labels=3)),
        (transformers.BertForTokenClassification, BertForTokenClassification, dict(num_labels=5)),
        (transformers.BertForQuestionAnswering, BertForQuestionAnswering, {}),
    ],
)
def test_finetuning_heads_parity_with_hf(tmp_path, hf_cls, our_cls, kw):
    ref = random_hf(hf_cls, **kw)
    ours = load_hf_bert(saved(ref, tmp_path), our_cls).eval()
    ids, types, mask, _, _ = batch()
    with torch.no_grad():
        r = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
        out = ours(ids, types, mask)
    if our_cls is BertForQuestionAnswering:
        assert max_abs(out[0], r.start_logits) < 1e-5 and max_abs(out[1], r.end_logits) < 1e-5
        assert ours.bert.pooler is None
    else:
        assert out.shape == r.logits.shape
        assert max_abs(out, r.logits) < 1e-5
        assert ours.classifier.proj.out_features == kw["num_labels"]


def test_encoder_parity_from_a_bert_model_state_dict():
    ref = random_hf(transformers.BertModel)
    ours = load_hf_bert(ref.state_dict(), Bert, config=ref.config.to_dict()).eval()
    ids, types, mask, _, _ = batch()
    with torch.no_grad():
        r = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
        seq, pooled = ours(ids, types, mask)
    assert max_abs(seq, r.last_hidden_state) < 1e-5
    assert max_abs(pooled, r.pooler_output) < 1e-5


def test_pretrained_encoder_under_a_new_classifier(tmp_path):
    """A pretraining checkpoint into a classifier: the encoder loads, the classifier starts afresh."""
    ref = random_hf(transformers.BertForPreTraining)
    folder = saved(ref, tmp_path)
    with pytest.raises(ConversionError, match="num_labels"):
        load_hf_bert(folder, BertForSequenceClassification)
    clf = load_hf_bert(folder, BertForTokenClassification, num_labels=7, dropout=0.0)
    assert clf.classifier.proj.out_features == 7 and clf.bert.cfg.dropout == 0.0
    words = ref.bert.embeddings.word_embeddings.weight
    assert torch.equal(clf.bert.embeddings.tokens.weight, words)
    # a fine-tuned classifier of another number of labels is left out too
    seq = random_hf(transformers.BertForSequenceClassification, num_labels=3)
    other = load_hf_bert(saved(seq, tmp_path / "seq"), BertForSequenceClassification, num_labels=4)
    assert other.classifier.proj.out_features == 4


def test_decoder_is_tied_to_the_word_embeddings(tmp_path):
    model = BertForPretraining(Bert(vocab_size=VOCAB, dim=32, depth=1, num_heads=2, max_positions=64, pad_token_id=0))
    assert model.mlm.decoder.weight is model.bert.embeddings.tokens.weight
    assert torch.count_nonzero(model.bert.embeddings.tokens.weight[0]) == 0  # padding row, zero after init
    assert model.bert.embeddings.tokens.padding_idx == 0
    loaded = load_hf_bert(saved(random_hf(transformers.BertForPreTraining), tmp_path), BertForPretraining)
    assert loaded.mlm.decoder.weight is loaded.bert.embeddings.tokens.weight
    names = [n for n, _ in loaded.named_parameters()]
    assert "bert.embeddings.tokens.weight" in names and "mlm.decoder.weight" not in names


def test_untied_hf_decoder_is_refused():
    ref = random_hf(transformers.BertForPreTraining)
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    sd["cls.predictions.decoder.weight"] += 1.0
    with pytest.raises(ConversionError, match="not tied"):
        hf_bert_to_tfm(sd)


def test_old_names_and_sharded_checkpoints(tmp_path):
    ref = random_hf(transformers.BertForPreTraining)
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in ref.state_dict().items()}
    ours = load_hf_bert(old, BertForPretraining, config=ref.config.to_dict()).eval()
    ref.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    sharded = load_hf_bert(tmp_path, BertForPretraining).eval()
    ids, types, mask, _, _ = batch()
    with torch.no_grad():
        r = ref(input_ids=ids, token_type_ids=types, attention_mask=mask).prediction_logits
        assert max_abs(ours(ids, types, mask).mlm_logits, r) < 1e-5
        assert max_abs(sharded(ids, types, mask).mlm_logits, r) < 1e-5


def test_clear_errors(tmp_path, monkeypatch):
    ref = random_hf(transformers.BertForPreTraining)
    with pytest.raises(ConversionError, match="does not exist"):
        load_hf_bert(tmp_path / "nowhere", BertForPretraining)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match="holds no model.safetensors or pytorch_model.bin"):
        load_hf_bert(empty)
    folder = saved(ref, tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(ConversionError, match="no config.json"):
        load_hf_bert(folder)
    with pytest.raises(ConversionError, match="pass config="):
        load_hf_bert(ref.state_dict())
    with pytest.raises(ConversionError, match=r"shape \(100, 64\) but the model expects \(120, 64\)"):
        load_hf_bert(ref.state_dict(), config={**ref.config.to_dict(), "vocab_size": 120})
    with pytest.raises(ConversionError, match="lacks encoder weights"):
        load_hf_bert(ref.state_dict(), config={**ref.config.to_dict(), "num_hidden_layers": 3})
    with pytest.raises(ConversionError, match="encoder weights .* the model lacks"):
        load_hf_bert(ref.state_dict(), config={**ref.config.to_dict(), "num_hidden_layers": 1})
    with pytest.raises(ConversionError, match="position_embedding_type"):
        hf_bert_config({**ref.config.to_dict(), "position_embedding_type": "relative_key"})
    with pytest.raises(ConversionError, match="model_cls"):
        load_hf_bert(ref.state_dict(), torch.nn.Linear, config=ref.config.to_dict())

    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("Cannot reach https://huggingface.co\nmore details")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConversionError, match="downloading it from the Hugging Face Hub failed: OSError: Cannot reach"):
        load_hf_bert("google-bert/bert-base-uncased")


def test_builders_have_the_documented_sizes():
    sizes = {"bert_tiny": (128, 2, 2), "bert_mini": (256, 4, 4), "bert_small": (512, 4, 8),
             "bert_base": (768, 12, 12), "bert_large": (1024, 24, 16)}
    for arch, (dim, depth, heads) in sizes.items():
        with torch.device("meta"):
            m = create_bert(arch)
            hf = transformers.BertModel(BertConfig(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
                                                   intermediate_size=4 * dim))
        assert (m.dim, len(m.encoder.blocks), m.cfg.num_heads, m.cfg.hidden_dim) == (dim, depth, heads, 4 * dim)
        assert m.embeddings.positions.num_embeddings == 512 and m.embeddings.segments.num_embeddings == 2
        assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in hf.parameters())
    with torch.device("meta"):
        ours = BertForPretraining(bert_base())
        ref = transformers.BertForPreTraining(BertConfig())
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in ref.parameters())
    assert n == pytest.approx(110e6, rel=0.01)
    assert create_bert("bert_tiny", vocab_size=8000).vocab_size == 8000
    with pytest.raises(ValueError, match="bert_mini"):
        create_bert("bert_huge")
    assert set(BERT_PRESETS) == set(sizes)


def test_layer_ids_and_weight_decay_groups():
    model = BertForPretraining(create_bert("bert_tiny", vocab_size=VOCAB, max_positions=64))
    assert model.num_layers == 3
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    assert ids["bert.embeddings.tokens.weight"] == ids["bert.embeddings.positions.weight"] == 0
    assert ids["bert.encoder.blocks.0.attn.qkv.weight"] == 1 and ids["bert.encoder.blocks.1.mlp.fc2.weight"] == 2
    assert ids["bert.pooler.weight"] == ids["mlm.dense.weight"] == ids["nsp.proj.weight"] == 3
    assert model.no_weight_decay() <= set(ids)
    groups = param_groups(model, 0.01, layer_decay=0.5)
    assert sum(len(g["params"]) for g in groups) == len(ids)  # the tied decoder counted once
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    named = dict(model.named_parameters())
    assert id(named["bert.embeddings.tokens.weight"]) in decayed
    assert id(named["bert.encoder.blocks.0.norm1.weight"]) not in decayed
    assert id(named["mlm.decoder.bias"]) not in decayed
