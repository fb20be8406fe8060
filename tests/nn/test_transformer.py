"""The backbone: parity with timm, masks, KV cache, DropPath, position-embedding resize."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from tfm.nn import (
    Decoder,
    DropPath,
    Encoder,
    EncoderDecoder,
    PatchEmbedding,
    TransformerConfig,
    resize_pos_embed,
    vit_base,
    vit_small,
    vit_tiny,
)
from tfm.nn.convert import ConversionError, load_timm_vit, timm_vit_config


def small_timm(**kw):
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=4, embed_dim=192, depth=2, num_heads=3, num_classes=10)
    args.update(kw)
    return timm.models.vision_transformer.VisionTransformer(**args).eval()


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_timm_vit_parity(pool):
    ref = small_timm(global_pool=pool)
    ours = load_timm_vit(ref.state_dict(), num_heads=3).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5
        assert (ours.forward_features(x) - ref.forward_features(x)).abs().max().item() < 1e-5
        feats = ours.forward_features(x)
        assert torch.allclose(ours.forward_head(feats, pre_logits=True), ref.forward_head(ref.forward_features(x), pre_logits=True), atol=1e-5)


def test_timm_parity_from_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    ref = small_timm()
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = load_timm_vit(path, num_heads=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5


def test_timm_parity_at_another_image_size():
    """Weights trained at 32 and run at 48: our resized position embeddings match timm's."""
    ref = small_timm(dynamic_img_size=True)
    ours = load_timm_vit(ref.state_dict(), num_heads=3).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5
    resized = load_timm_vit(ref.state_dict(), num_heads=3, image_size=48).eval()
    assert resized.patch_embed.pos_embed.shape == (1, 1 + 12 * 12, 192)
    with torch.no_grad():
        assert (resized(x) - ref(x)).abs().max().item() < 1e-5


def test_config_read_from_timm_weights():
    cfg = timm_vit_config(small_timm().state_dict(), num_heads=3)
    assert cfg == dict(image_size=32, patch_size=4, in_chans=3, num_classes=10, dim=192, depth=2, num_heads=3,
                       mlp_ratio=4.0, qkv_bias=True, global_pool="token", class_token=True)


def test_timm_variant_we_do_not_build_is_refused():
    ref = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=1, num_heads=2, init_values=1e-5)
    with pytest.raises(ConversionError, match="layer scale"):
        load_timm_vit(ref.state_dict(), num_heads=2)


def test_resize_pos_embed_equals_timm_and_keeps_original_size():
    pe = torch.randn(1, 1 + 8 * 8, 32)
    assert torch.equal(resize_pos_embed(pe, (8, 8), (8, 8)), pe)
    ours = resize_pos_embed(pe, (12, 10), (8, 8))
    ref = resample_abs_pos_embed(pe, new_size=(12, 10), old_size=(8, 8), num_prefix_tokens=1)
    assert torch.allclose(ours, ref, atol=1e-6)
    # a model keeps its outputs for its own size: resizing to the same size changes nothing,
    # and running at another size leaves the stored embeddings untouched
    torch.manual_seed(0)
    m = vit_tiny(image_size=32, patch_size=4, dim=64, depth=1, num_heads=2, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = m(x)
        m(torch.randn(2, 3, 64, 64))
        m.patch_embed.set_image_size(32)
        assert torch.equal(m(x), before)


def test_builders_have_the_paper_sizes():
    assert sum(p.numel() for p in vit_tiny().parameters()) == pytest.approx(5.72e6, rel=0.01)
    assert sum(p.numel() for p in vit_small().parameters()) == pytest.approx(22.05e6, rel=0.01)
    assert sum(p.numel() for p in vit_base().parameters()) == pytest.approx(86.57e6, rel=0.01)


def test_no_weight_decay_names_exist():
    m = vit_tiny(image_size=32, patch_size=4, depth=1)
    names = dict(m.named_parameters())
    assert m.no_weight_decay() <= set(names)


@pytest.mark.parametrize("norm_first", [True, False])
def test_padding_changes_nothing_for_real_tokens(norm_first):
    torch.manual_seed(0)
    enc = Encoder(TransformerConfig(dim=32, depth=2, num_heads=4, norm_first=norm_first)).eval()
    x = torch.randn(2, 7, 32)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, 5:] = True
    with torch.no_grad():
        out = enc(x, pad)
        x2 = x.clone()
        x2[0, 5:] = 100 * torch.randn(2, 32)  # whatever sits in the padding
        out2 = enc(x2, pad)
        alone = enc(x[:1, :5])  # the same sentence with no padding at all
    assert torch.allclose(out[0, :5], out2[0, :5], atol=1e-6)
    assert torch.allclose(out[0, :5], alone[0], atol=1e-5)
    assert torch.equal(out[1], out2[1])


@pytest.mark.parametrize("norm_first", [True, False])
def test_output_positions_equal_selecting_from_the_full_output(norm_first):
    torch.manual_seed(0)
    enc = Encoder(TransformerConfig(dim=32, depth=2, num_heads=4, norm_first=norm_first)).eval()
    x = torch.randn(3, 9, 32)
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[1, 6:] = True
    idx = torch.tensor([[0, 3], [5, 1], [8, 8]])
    with torch.no_grad():
        full = enc(x, pad)
        assert torch.allclose(enc(x, pad, output_positions=slice(0, 1)), full[:, :1], atol=1e-6)
        assert torch.allclose(enc(x, pad, output_positions=idx), torch.gather(full, 1, idx[..., None].expand(-1, -1, 32)), atol=1e-6)


def test_causal_mask_hides_the_future():
    torch.manual_seed(0)
    dec = Decoder(TransformerConfig(dim=32, depth=2, num_heads=4)).eval()
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        out = dec(x)
        x2 = x.clone()
        x2[:, 4:] = torch.randn(1, 2, 32)
        out2 = dec(x2)
    assert torch.allclose(out[:, :4], out2[:, :4], atol=1e-6)
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


@pytest.mark.parametrize("norm_first", [True, False])
def test_kv_cached_decoding_equals_full_recompute(norm_first):
    torch.manual_seed(0)
    enc_cfg = TransformerConfig(dim=32, depth=2, num_heads=4, norm_first=norm_first, activation="relu")
    dec_cfg = TransformerConfig(dim=32, depth=3, num_heads=4, norm_first=norm_first, activation="relu", cross_attention=True)
    model = EncoderDecoder(enc_cfg, dec_cfg).eval()
    src = torch.randn(2, 5, 32)
    src_pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    tgt = torch.randn(2, 7, 32)
    with torch.no_grad():
        memory = model.encoder(src, src_pad)
        full = model.decoder(tgt, memory, src_pad)
        cache = model.decoder.new_cache()
        steps = [model.decoder(tgt[:, t : t + 1], memory, src_pad, cache=cache) for t in range(7)]
        assert cache.length == 7
        # a prefix of 3 at once, then one at a time
        cache2 = model.decoder.new_cache()
        chunked = [model.decoder(tgt[:, :3], memory, src_pad, cache=cache2)] + [
            model.decoder(tgt[:, t : t + 1], memory, src_pad, cache=cache2) for t in range(3, 7)
        ]
        # several new positions after a cached prefix
        cache3 = model.decoder.new_cache()
        model.decoder(tgt[:, :2], memory, src_pad, cache=cache3)
        tail = model.decoder(tgt[:, 2:], memory, src_pad, cache=cache3)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    assert torch.allclose(torch.cat(chunked, 1), full, atol=1e-5)
    assert torch.allclose(tail, full[:, 2:], atol=1e-5)


def test_cache_reorder_follows_the_beams():
    torch.manual_seed(0)
    dec = Decoder(TransformerConfig(dim=16, depth=1, num_heads=2, cross_attention=True)).eval()
    memory = torch.randn(3, 4, 16)
    x = torch.randn(3, 2, 16)
    with torch.no_grad():
        cache = dec.new_cache()
        dec(x[:, :1], memory, cache=cache)
        order = torch.tensor([2, 2, 0])
        cache.reorder(order)
        step = dec(x[order, 1:2], memory[order], cache=cache)
        full = dec(x[order], memory[order])
    assert torch.allclose(step, full[:, 1:], atol=1e-5)


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_train():
    dp = DropPath(0.5)
    x = torch.randn(64, 5, 8) + 3
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    torch.manual_seed(0)
    y = dp(x)
    dropped = (y == 0).flatten(1).all(1)
    kept = torch.isclose(y, 2 * x).flatten(1).all(1)
    assert torch.all(dropped | kept)
    assert 10 < dropped.sum() < 54


def test_drop_path_schedule_is_linear():
    cfg = TransformerConfig(dim=16, depth=5, num_heads=2, drop_path=0.2)
    assert cfg.drop_path_rates() == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    enc = Encoder(cfg)
    assert [getattr(b.drop_path, "p", 0.0) for b in enc.blocks] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_patch_embedding_tokens():
    pe = PatchEmbedding(image_size=28, patch_size=4, in_chans=1, dim=16)
    assert pe(torch.randn(2, 1, 28, 28)).shape == (2, 1 + 49, 16)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        pe(torch.randn(2, 1, 30, 30))


def test_attention_maps_are_distributions():
    m = vit_tiny(image_size=16, patch_size=4, dim=32, depth=2, num_heads=2, num_classes=2).eval()
    maps = m.attention_maps(torch.randn(3, 3, 16, 16))
    assert len(maps) == 2 and maps[0].shape == (3, 2, 17, 17)
    assert torch.allclose(maps[0].sum(-1), torch.ones(3, 2, 17))


def test_conv_stem_gives_the_same_token_grid():
    patch = PatchEmbedding(image_size=28, patch_size=4, in_chans=1, dim=32)
    conv = PatchEmbedding(image_size=28, patch_size=4, in_chans=1, dim=32, stem="conv")
    x = torch.randn(2, 1, 28, 28)
    assert conv(x).shape == patch(x).shape == (2, 50, 32)
    with pytest.raises(ValueError, match="power-of-two"):
        PatchEmbedding(image_size=24, patch_size=6, dim=32, stem="conv")
