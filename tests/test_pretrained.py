"""The one weights loader (tfm.pretrained): every read of a file that came from outside the run is weights-only,
so a checkpoint whose pickle would run code is refused with one line and its code never runs."""

from __future__ import annotations

import pytest
import torch
from conftest import crafted

from tfm.errors import UserError
from tfm.pretrained import Pretrained, read_checkpoint
from tfm.runs import newest_checkpoint
from tfm.tasks import BertPretraining, ImageClassification, Translation
from tfm.tasks.bert import load_bert_backbone
from tfm.tasks.translation import load_translation_weights


def test_a_crafted_checkpoint_is_refused_everywhere_and_its_code_never_runs(tmp_path):
    path, marker = crafted(tmp_path)
    refused = "weights-only load refuses"
    with pytest.raises(UserError, match=refused):
        read_checkpoint(path)
    with pytest.raises(UserError, match=refused):
        ImageClassification(arch="vit_tiny", dim=32, depth=1, num_heads=2, num_classes=3, init_from=str(path))
    with pytest.raises(UserError, match=refused):
        load_bert_backbone(str(path), vocab_size=100, dropout=0.0, attn_dropout=0.0)
    with pytest.raises(UserError, match=refused):
        load_translation_weights(str(path), vocab_size=100, tgt_vocab_size=None, dropout=0.0)
    # checkpoint discovery (--ckpt_path last) passes over it: no checkpoint to resume
    run = tmp_path / "run"
    crafted(run / "checkpoints", "last.ckpt")
    with pytest.warns(UserWarning, match=f"{refused}.*: skipped"):
        assert newest_checkpoint(run) is None
    assert not marker.exists() and not (run / "checkpoints" / "last.ckpt.ran").exists()

    # the payload is real: a full (not weights-only) load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_weights_come_under_their_prefix_with_the_checkpoints_hyperparameters(tmp_path):
    torch.save({"state_dict": {"net.backbone.w": torch.ones(2), "net.head.b": torch.zeros(1)},
                "hyper_parameters": {"arch": "vit_tiny", "dim": 32}}, tmp_path / "a.ckpt")
    src = Pretrained(str(tmp_path / "a.ckpt"), "a tfm .ckpt")
    assert src.hparams == {"arch": "vit_tiny", "dim": 32}
    assert list(src.weights("net.backbone.", "net.")) == ["w"]
    assert sorted(src.weights("net.")) == ["backbone.w", "head.b"]
    assert src.weights("other.") == {}
    with pytest.raises(UserError, match=r"^--model.init_from nowhere.ckpt does not exist: pass a tfm .ckpt$"):
        Pretrained("nowhere.ckpt", "a tfm .ckpt")


def saved(task, path):
    """``task`` as Lightning saves it: its weights and hyper-parameters, nothing else."""
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams), "global_step": 1}, path)
    return str(path)


def test_tfm_checkpoints_start_bert_and_translation_tasks_with_their_weights(tmp_path):
    torch.manual_seed(0)
    pre = BertPretraining(arch="bert_tiny", vocab_size=120, max_positions=32)
    bert = load_bert_backbone(saved(pre, tmp_path / "bert.ckpt"), vocab_size=120, dropout=0.0, attn_dropout=0.0)
    assert bert.state_dict().keys() <= pre.net.bert.state_dict().keys()
    assert all(torch.equal(v, pre.net.bert.state_dict()[k]) for k, v in bert.state_dict().items())
    again = BertPretraining(arch="bert_tiny", vocab_size=120, max_positions=32, init_from=str(tmp_path / "bert.ckpt"))
    assert all(torch.equal(v, pre.state_dict()[k]) for k, v in again.state_dict().items())
    with pytest.raises(UserError, match="has a vocabulary of 120 tokens but the data's tokenizer has 99"):
        load_bert_backbone(str(tmp_path / "bert.ckpt"), vocab_size=99, dropout=0.0, attn_dropout=0.0)

    mt = Translation(arch="transformer_tiny", vocab_size=90, dim=16, ffn_dim=32, num_heads=2)
    net = load_translation_weights(saved(mt, tmp_path / "mt.ckpt"), vocab_size=90, tgt_vocab_size=None, dropout=0.0)
    assert all(torch.equal(v, mt.net.state_dict()[k]) for k, v in net.state_dict().items())
    with pytest.raises(UserError, match="is not a checkpoint of a tfm BERT task"):
        load_bert_backbone(str(tmp_path / "mt.ckpt"), vocab_size=90, dropout=0.0, attn_dropout=0.0)
