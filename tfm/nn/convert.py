"""Import weights of other libraries into tfm models.

Each importer takes a state dict, a ``.safetensors`` file or a ``.bin``/``.pth`` file, maps the
names, checks every shape and fails with one clear message when something does not fit.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from .bert import (
    Bert,
    BertForPretraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from .embeddings import resize_pos_embed
from .models import VisionTransformer
from .seq2seq import Seq2SeqTransformer

StateDict = Mapping[str, Tensor]
M = TypeVar("M", bound=nn.Module)


class ConversionError(ValueError):
    """Weights that do not fit the model they are loaded into."""


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file read with ``weights_only=True`` (nothing in it runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return state_dict_of(torch.load(path, map_location="cpu", weights_only=True))


def state_dict_of(obj: Any) -> dict[str, Tensor]:
    """The tensors of a read torch file: its ``state_dict`` (a Lightning checkpoint's), ``model`` or ``module``
    entry, else the file itself."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return dict(obj)


def _as_state_dict(source: StateDict | str | Path) -> dict[str, Tensor]:
    return load_state_dict_file(source) if isinstance(source, (str, Path)) else dict(source)


def load_into(model: nn.Module, state_dict: StateDict, what: str, strict: bool = True) -> None:
    """``model.load_state_dict`` with shape checks that name the first mismatching tensor."""
    own = model.state_dict()
    for k, v in state_dict.items():
        if k in own and own[k].shape != v.shape:
            raise ConversionError(
                f"{what}: tensor {k} has shape {tuple(v.shape)} but the model expects {tuple(own[k].shape)}"
            )
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if strict and (missing or unexpected):
        raise ConversionError(f"{what}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")


# Name tables: one style for every source. A table is an ordered list of (regex, replacement) over a whole name;
# the first match renames it (None: the weight is dropped), a name no entry matches is refused. Query, key and value
# come out as ``attn.{q,k,v}`` / ``cross_attn.{q,k,v}`` and are fused by :func:`_fuse_attention`.
NameTable = list[tuple[str, str | None]]


def _rename(state_dict: StateDict, table: NameTable, what: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for pattern, repl in table:
            if m := re.fullmatch(pattern, key):
                if repl is not None:
                    out[m.expand(repl)] = value
                break
        else:
            raise ConversionError(f"{what} weight {key} has no counterpart in tfm (another {what} variant?)")
    return out


def _fuse_attention(sd: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    """``X.attn.{q,k,v}.T`` -> ``X.attn.qkv.T``; ``X.cross_attn.{k,v}.T`` -> ``X.cross_attn.kv.T`` (its ``q`` stays)."""
    groups: dict[tuple[str, str, str], dict[str, Tensor]] = {}
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        m = re.fullmatch(r"(.+)\.(attn|cross_attn)\.([qkv])\.(weight|bias)", key)
        if m is None or (m.group(2) == "cross_attn" and m.group(3) == "q"):
            out[key] = value
        else:
            groups.setdefault((m.group(1), m.group(2), m.group(4)), {})[m.group(3)] = value
    for (prefix, attn, kind), parts in sorted(groups.items()):
        want = ("q", "k", "v") if attn == "attn" else ("k", "v")
        if set(parts) != set(want) or (attn == "cross_attn" and f"{prefix}.cross_attn.q.{kind}" not in out):
            raise ConversionError(f"{what} {prefix}: {attn} {kind} of query/key/value incomplete (only {', '.join(sorted(parts))})")
        out[f"{prefix}.{attn}.{'qkv' if attn == 'attn' else 'kv'}.{kind}"] = torch.cat([parts[w] for w in want])
    return out


# timm ViT ------------------------------------------------------------------------------------------

_TIMM_VIT_NAMES: NameTable = [
    (r"(cls_token|pos_embed)", r"patch_embed.\1"),
    (r"blocks\.(.+)", r"encoder.blocks.\1"),
    (r"norm\.(.+)", r"encoder.norm.\1"),
    (r"(.+)", r"\1"),  # patch_embed, fc_norm, head: the same names
]
_TIMM_VIT_UNSUPPORTED = ("reg_token", ".ls1.", ".ls2.", ".q_norm.", ".k_norm.", "norm_pre.", "attn_pool.")


def timm_vit_config(state_dict: StateDict, num_heads: int | None = None) -> dict[str, Any]:
    """Architecture arguments of :class:`VisionTransformer` read off a timm ViT state dict.

    The number of heads is not in the weights: pass it, or it is taken as ``dim // 64``."""
    sd = state_dict
    if "patch_embed.proj.weight" not in sd or "pos_embed" not in sd:
        raise ConversionError("not a timm VisionTransformer state dict: no patch_embed.proj.weight / pos_embed")
    w = sd["patch_embed.proj.weight"]
    dim, in_chans, patch = w.shape[0], w.shape[1], w.shape[-1]
    class_token = "cls_token" in sd
    n = sd["pos_embed"].shape[1] - (1 if class_token else 0)
    side = int(math.isqrt(n))
    if side * side != n:
        raise ConversionError(f"position embeddings of {n} patches are not a square grid")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    return dict(
        image_size=side * patch,
        patch_size=patch,
        in_chans=in_chans,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        dim=dim,
        depth=depth,
        num_heads=num_heads or max(1, dim // 64),
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        global_pool="avg" if "fc_norm.weight" in sd else "token",
        class_token=class_token,
    )


def timm_vit_to_tfm(state_dict: StateDict) -> dict[str, Tensor]:
    """Rename a timm ``VisionTransformer`` state dict to :class:`VisionTransformer` names."""
    if bad := next((k for k in state_dict if any(u in k for u in _TIMM_VIT_UNSUPPORTED)), None):
        raise ConversionError(f"timm ViT weight {bad} belongs to a variant tfm does not build (layer scale, registers, qk-norm)")
    return _rename(state_dict, _TIMM_VIT_NAMES, "timm ViT")


def load_timm_vit(
    source: StateDict | str | Path,
    model: VisionTransformer | None = None,
    num_heads: int | None = None,
    **overrides: Any,
) -> VisionTransformer:
    """Load timm ViT weights into ``model``, or into a new model built from the weights' shapes.

    ``overrides`` change the built model: ``image_size=384`` resizes the position embeddings,
    ``num_classes=10`` starts a new classifier.
    """
    timm_sd = _as_state_dict(source)
    sd = timm_vit_to_tfm(timm_sd)
    if model is None:
        cfg = timm_vit_config(timm_sd, num_heads)
        image_size = overrides.pop("image_size", cfg["image_size"])
        model = VisionTransformer(**{**cfg, **overrides})
        load_into(model, _keep_head_if_it_fits(model, sd), "timm ViT", strict=False)
        if image_size != cfg["image_size"]:
            model.patch_embed.set_image_size(image_size)
        return model
    load_vit_backbone(model, sd, "timm ViT")
    return model


def load_vit_backbone(model: VisionTransformer, sd: StateDict, what: str) -> None:
    """Load tfm-named ViT weights; position embeddings are resized to the model's image size and
    the classifier is kept only when its number of classes matches."""
    sd = dict(sd)
    pe = sd.get("patch_embed.pos_embed")
    own = model.patch_embed
    if pe is not None and pe.shape != own.pos_embed.shape:
        old = pe.shape[1] - own.num_prefix_tokens
        side = int(math.isqrt(old))
        if side * side != old or pe.shape[-1] != own.pos_embed.shape[-1]:
            raise ConversionError(f"{what}: position embeddings {tuple(pe.shape)} do not fit {tuple(own.pos_embed.shape)}")

        sd["patch_embed.pos_embed"] = resize_pos_embed(pe, own.grid_size, (side, side), own.num_prefix_tokens)
    load_into(model, _keep_head_if_it_fits(model, sd), what, strict=False)


def _keep_head_if_it_fits(model: VisionTransformer, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keep the classifier only when its number of classes matches the model's."""
    head = sd.get("head.weight")
    if head is not None and (model.num_classes == 0 or head.shape[0] != model.num_classes):
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    missing = sorted(k for k in set(model.state_dict()) - set(sd) if not k.startswith("head."))
    if missing:
        raise ConversionError(f"ViT weights lack {missing[:5]} (another ViT variant?)")
    return sd


# Hugging Face BERT ---------------------------------------------------------------------------------

_HF_BERT_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_HF_BERT_NAMES: NameTable = [  # names without the ``bert.`` prefix, TensorFlow's LayerNorm gamma/beta renamed
    (r"embeddings\.(position_ids|token_type_ids)", None),
    (r"embeddings\.word_embeddings\.(.+)", r"bert.embeddings.tokens.\1"),
    (r"embeddings\.position_embeddings\.(.+)", r"bert.embeddings.positions.\1"),
    (r"embeddings\.token_type_embeddings\.(.+)", r"bert.embeddings.segments.\1"),
    (r"embeddings\.LayerNorm\.(.+)", r"bert.embeddings.norm.\1"),
    (r"encoder\.layer\.(\d+)\.attention\.self\.query\.(weight|bias)", r"bert.encoder.blocks.\1.attn.q.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.self\.key\.(weight|bias)", r"bert.encoder.blocks.\1.attn.k.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.self\.value\.(weight|bias)", r"bert.encoder.blocks.\1.attn.v.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(.+)", r"bert.encoder.blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(.+)", r"bert.encoder.blocks.\1.norm1.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(.+)", r"bert.encoder.blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(.+)", r"bert.encoder.blocks.\1.mlp.fc2.\2"),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.(.+)", r"bert.encoder.blocks.\1.norm2.\2"),
    (r"pooler\.dense\.(.+)", r"bert.pooler.\1"),
    (r"cls\.predictions\.transform\.dense\.(.+)", r"mlm.dense.\1"),
    (r"cls\.predictions\.transform\.LayerNorm\.(.+)", r"mlm.norm.\1"),
    (r"cls\.predictions\.bias", "mlm.decoder.bias"),
    (r"cls\.predictions\.decoder\.(weight|bias)", r"mlm.hf_decoder.\1"),  # checked and dropped below
    (r"cls\.seq_relationship\.(.+)", r"nsp.proj.\1"),
    (r"classifier\.(.+)", r"classifier.proj.\1"),
    (r"qa_outputs\.(.+)", r"qa.proj.\1"),
]
# parts of a task model that may be absent from a checkpoint: they keep their initialisation
_HEAD_PREFIXES = ("bert.pooler.", "mlm.", "nsp.", "classifier.", "qa.")
_HF_BERT_MODELS = (
    Bert,
    BertForPretraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertForQuestionAnswering,
)


def hf_bert_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~tfm.nn.bert.Bert` arguments from an HF ``BertConfig`` dict (``config.json``)."""
    if config.get("model_type", "bert") != "bert":
        raise ConversionError(f"model_type={config['model_type']!r} is not BERT (tfm imports model_type 'bert')")
    if config.get("position_embedding_type", "absolute") != "absolute":
        kind = config["position_embedding_type"]
        raise ConversionError(f"position_embedding_type={kind!r}: tfm's BERT has absolute positions only")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise ConversionError("a BERT decoder (is_decoder / add_cross_attention) is not supported: tfm's is an encoder")
    act = config.get("hidden_act", "gelu")
    if act not in _HF_BERT_ACTIVATIONS:
        raise ConversionError(f"hidden_act={act!r}: tfm's BERT supports {', '.join(_HF_BERT_ACTIVATIONS)}")
    need = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [k for k in need if k not in config]
    if missing:
        raise ConversionError(f"BERT config lacks {', '.join(missing)}")
    return dict(
        vocab_size=config["vocab_size"],
        dim=config["hidden_size"],
        depth=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        ffn_dim=config["intermediate_size"],
        max_positions=config.get("max_position_embeddings", 512),
        type_vocab_size=config.get("type_vocab_size", 2),
        pad_token_id=config.get("pad_token_id", 0),
        dropout=config.get("hidden_dropout_prob", 0.1),
        attn_dropout=config.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=config.get("layer_norm_eps", 1e-12),
        activation=_HF_BERT_ACTIVATIONS[act],
    )


def hf_bert_to_tfm(state_dict: StateDict) -> dict[str, Tensor]:
    """Rename an HF BERT state dict (``BertModel``, ``BertForPreTraining``, ``BertForMaskedLM``,
    ``BertFor{Sequence,Token}Classification``, ``BertForQuestionAnswering``) to the names of the
    tfm task models: the encoder under ``bert.``, heads ``mlm.``, ``nsp.``, ``classifier.``,
    ``qa.``. Query, key and value are fused into one ``qkv``; the MLM decoder weight is dropped
    (tfm ties it to the word embeddings, and refuses a checkpoint where it is not tied)."""
    names = {re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias",
                                                                       k.removeprefix("bert."))): v
             for k, v in state_dict.items()}
    out = _fuse_attention(_rename(names, _HF_BERT_NAMES, "HF BERT"), "HF BERT")
    decoder, decoder_bias = out.pop("mlm.hf_decoder.weight", None), out.pop("mlm.hf_decoder.bias", None)
    if decoder_bias is not None:
        out.setdefault("mlm.decoder.bias", decoder_bias)
    words = out.get("bert.embeddings.tokens.weight")
    if decoder is not None and words is not None and not torch.equal(decoder, words):
        raise ConversionError("HF BERT MLM decoder is not tied to the word embeddings: tfm's MLM head always ties them")
    return out


def load_hf_bert(
    source: StateDict | str | Path,
    model_cls: type[M] = Bert,  # type: ignore[assignment]
    config: Mapping[str, Any] | str | Path | None = None,
    num_labels: int | None = None,
    **overrides: Any,
) -> M:
    """An HF BERT checkpoint as a tfm model of class ``model_cls``.

    ``source``: a folder with ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``
    (what ``save_pretrained`` writes, sharded or not), a weights file (``config.json`` next to it
    or ``config=``), a state dict (with ``config=``), or a Hub repo id (downloaded with
    ``huggingface_hub`` when installed and online). ``model_cls``: :class:`Bert`,
    :class:`BertForPretraining`, :class:`BertForSequenceClassification`,
    :class:`BertForTokenClassification` or :class:`BertForQuestionAnswering`.

    Every encoder weight must be in the checkpoint; heads (pooler, MLM, NSP, classifier, QA) are
    loaded when present with matching shapes and keep their fresh initialisation otherwise (a
    pretrained encoder under a new classifier). ``num_labels`` defaults to the checkpoint's
    classifier; ``overrides`` change :class:`Bert` arguments (``dropout=0.0``).
    """
    hf_sd, cfg_dict, what = _hf_bert_source(source, config)
    sd = hf_bert_to_tfm(hf_sd)
    cfg = {**hf_bert_config(cfg_dict), **overrides}
    head_dropout = cfg_dict.get("classifier_dropout")
    if model_cls is Bert:
        model: nn.Module = Bert(**cfg, add_pooler="bert.pooler.weight" in sd)
        sd = {k.removeprefix("bert."): v for k, v in sd.items() if k.startswith("bert.")}
    elif model_cls is BertForPretraining:
        model = BertForPretraining(Bert(**cfg))
    elif model_cls in (BertForSequenceClassification, BertForTokenClassification):
        if num_labels is None and "classifier.proj.weight" not in sd:
            raise ConversionError(f"{what} has no classifier to read the number of labels from: pass num_labels=")
        n = num_labels if num_labels is not None else sd["classifier.proj.weight"].shape[0]
        model = model_cls(Bert(**cfg), n, head_dropout)
    elif model_cls is BertForQuestionAnswering:
        model = BertForQuestionAnswering(Bert(**cfg, add_pooler=False))
    else:
        names = ", ".join(c.__name__ for c in _HF_BERT_MODELS)
        raise ConversionError(f"model_cls={getattr(model_cls, '__name__', model_cls)}: use one of {names}")
    own = model.state_dict()
    heads = _HEAD_PREFIXES if model_cls is not Bert else ("pooler.",)
    keep, unexpected = {}, []
    for k, v in sd.items():
        if k.startswith(heads) and (k not in own or v.shape != own[k].shape):
            continue  # a head this model lacks (NSP in a Bert), or of another number of labels
        if k not in own:
            unexpected.append(k)
        keep[k] = v
    if unexpected:
        raise ConversionError(f"{what} has encoder weights {unexpected[:3]} the model lacks (config disagrees?)")
    aliases = _tied_aliases(model)
    missing = sorted(k for k in own if k not in keep and k not in aliases and not k.startswith(heads))
    if missing:
        raise ConversionError(f"{what} lacks encoder weights {missing[:3]} (config disagrees?)")
    load_into(model, keep, what, strict=False)
    return model  # type: ignore[return-value]


def _tied_aliases(model: nn.Module) -> set[str]:
    """State-dict names of parameters that are the same tensor as an earlier name (a tied decoder)."""
    seen: set[int] = set()
    aliases = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            aliases.add(name)
        seen.add(id(p))
    return aliases


_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _hf_bert_source(
    source: StateDict | str | Path, config: Mapping[str, Any] | str | Path | None
) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """``(state dict, config dict, description for messages)`` of a BERT checkpoint source."""
    return _hf_checkpoint(source, config, "BERT")


def _hf_checkpoint(source: StateDict | str | Path, config: Any, kind: str) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """A state dict (with ``config=``), a folder with ``config.json`` and weights, a weights file
    (its folder's ``config.json`` or ``config=``) or a Hub repo id: ``(state dict, config dict,
    description for messages)``; ``kind`` names the model family in messages."""
    if not isinstance(source, (str, Path)):
        if config is None:
            raise ConversionError("a state dict does not give the number of heads: pass config= (dict or config.json)")
        return dict(source), _read_config(config, kind), f"HF {kind} state dict"
    path = Path(source).expanduser()
    if not path.exists():
        if isinstance(source, str) and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source):
            path = _hub_download(source)
        else:
            raise ConversionError(f"{kind} checkpoint {source} does not exist (want a folder with config.json + weights)")
    what = f"HF {kind} {source}"
    if path.is_dir():
        weights = next((path / f for f in _HF_WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise ConversionError(f"{path} holds no {' or '.join(_HF_WEIGHT_FILES[::2])}")
    else:
        weights, path = path, path.parent
    if config is None:
        if not (path / "config.json").is_file():
            raise ConversionError(f"no config.json in {path}: pass config= (an HF config dict or config.json)")
        config = path / "config.json"
    return _read_weights(weights), _read_config(config, kind), what


def _read_weights(path: Path) -> dict[str, Tensor]:
    if not path.name.endswith(".index.json"):
        return load_state_dict_file(path)
    shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
    sd: dict[str, Tensor] = {}
    for shard in shards:
        if not (path.parent / shard).is_file():
            raise ConversionError(f"{path} names the shard {shard}, which is not in {path.parent}")
        sd.update(load_state_dict_file(path.parent / shard))
    return sd


def _read_config(config: Mapping[str, Any] | str | Path, kind: str = "BERT") -> dict[str, Any]:
    """An HF config: a dict, an object with ``to_dict()`` (``MarianConfig`` ...) or a ``config.json``."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if not path.is_file():
        raise ConversionError(f"{kind} config {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{kind} config {path} is not valid JSON: {e}") from None


def _hub_download(repo_id: str) -> Path:
    """The Hub snapshot of ``repo_id`` (config and weights only), or a one-line error."""
    try:
        from huggingface_hub import snapshot_download  # only for a hub id (online)
    except ImportError:
        msg = f"{repo_id} is not a local path, and huggingface_hub is not installed to fetch it"
        raise ConversionError(msg) from None
    try:
        folder = snapshot_download(repo_id, allow_patterns=["config.json", "model.safetensors*", "pytorch_model.bin*"])
    except Exception as e:  # offline, unknown repo, gated model...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        msg = f"{repo_id} is not a local path, and downloading it from the Hugging Face Hub failed"
        raise ConversionError(f"{msg}: {type(e).__name__}: {first}") from None
    return Path(folder)


# Hugging Face Marian (OPUS-MT) ---------------------------------------------------------------------

_HF_MARIAN_ACTIVATIONS = {"swish": "silu", "silu": "silu", "relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                          "gelu_pytorch_tanh": "gelu_tanh"}
_HF_MARIAN_NAMES: NameTable = [  # names without the ``model.`` prefix
    (r"shared\.weight", "shared.weight"),  # the tied matrix: under each name it serves, below
    (r"encoder\.embed_tokens\.weight", "src_embed.tokens.weight"),
    (r"decoder\.embed_tokens\.weight", "tgt_embed.tokens.weight"),
    (r"encoder\.embed_positions\.weight", "src_embed.positions.table"),
    (r"decoder\.embed_positions\.weight", "tgt_embed.positions.table"),
    (r"(lm_head\.weight|final_logits_bias)", r"\1"),
    (r"(encoder|decoder)\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", r"transformer.\1.blocks.\2.attn.\3.\4"),
    (r"(encoder|decoder)\.layers\.(\d+)\.self_attn\.out_proj\.(.+)", r"transformer.\1.blocks.\2.attn.proj.\3"),
    (r"(encoder|decoder)\.layers\.(\d+)\.self_attn_layer_norm\.(.+)", r"transformer.\1.blocks.\2.norm1.\3"),
    (r"decoder\.layers\.(\d+)\.encoder_attn\.([qkv])_proj\.(weight|bias)", r"transformer.decoder.blocks.\1.cross_attn.\2.\3"),
    (r"decoder\.layers\.(\d+)\.encoder_attn\.out_proj\.(.+)", r"transformer.decoder.blocks.\1.cross_attn.proj.\2"),
    (r"decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.(.+)", r"transformer.decoder.blocks.\1.norm_cross.\2"),
    (r"(encoder|decoder)\.layers\.(\d+)\.(fc1|fc2)\.(.+)", r"transformer.\1.blocks.\2.mlp.\3.\4"),
    (r"(encoder|decoder)\.layers\.(\d+)\.final_layer_norm\.(.+)", r"transformer.\1.blocks.\2.norm2.\3"),
]


def hf_marian_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~tfm.nn.seq2seq.Seq2SeqTransformer` arguments from an HF ``MarianConfig`` dict.

    Marian is post-LN (eps 1e-5), with sinusoidal positions (sines then cosines), tokens scaled by
    ``sqrt(d_model)`` (``scale_embedding``), a fixed ``final_logits_bias``, and decoding starts
    with ``decoder_start_token_id`` (the pad token in OPUS-MT models)."""
    if config.get("model_type", "marian") != "marian":
        raise ConversionError(f"model_type={config['model_type']!r} is not Marian (load_hf_marian imports model_type 'marian')")
    need = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "encoder_ffn_dim")
    missing = [k for k in need if k not in config]
    if missing:
        raise ConversionError(f"Marian config lacks {', '.join(missing)}")
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if config.get(b, config[a]) != config[a]:
            raise ConversionError(f"Marian config has {a}={config[a]} but {b}={config[b]}: tfm uses one value for both stacks")
    act = config.get("activation_function", "gelu")
    if act not in _HF_MARIAN_ACTIVATIONS:
        raise ConversionError(f"activation_function={act!r}: tfm supports {', '.join(_HF_MARIAN_ACTIVATIONS)}")
    if config.get("normalize_before") or config.get("add_final_layer_norm"):
        raise ConversionError("a pre-LN Marian variant (normalize_before / add_final_layer_norm) is not supported")

    def one(name: str) -> int | None:
        value = config.get(name)
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise ConversionError(f"{name}={value}: tfm decodes with a single {name}")
            value = value[0]
        return value

    vocab = config["vocab_size"]
    dec_vocab = config.get("decoder_vocab_size") or vocab
    shared = config.get("share_encoder_decoder_embeddings", True)
    if shared and dec_vocab != vocab:
        raise ConversionError(f"share_encoder_decoder_embeddings with vocab_size={vocab} != decoder_vocab_size={dec_vocab}")
    pad = one("pad_token_id")
    start = one("decoder_start_token_id")
    return dict(
        vocab_size=vocab,
        pad_token_id=pad,
        tgt_vocab_size=None if shared else dec_vocab,
        dim=config["d_model"],
        encoder_layers=config["encoder_layers"],
        decoder_layers=config["decoder_layers"],
        num_heads=config["encoder_attention_heads"],
        ffn_dim=config["encoder_ffn_dim"],
        activation=_HF_MARIAN_ACTIVATIONS[act],
        norm_first=False,
        layer_norm_eps=1e-5,
        dropout=config.get("dropout", 0.1),
        attn_dropout=config.get("attention_dropout", 0.0),
        activation_dropout=config.get("activation_dropout", 0.0),
        max_positions=config.get("max_position_embeddings", 1024),
        position="sinusoidal",
        share_embeddings=config.get("tie_word_embeddings", True),
        scale_embedding=config.get("scale_embedding", False),
        final_logits_bias=True,
        bos_token_id=start if start is not None else pad,
        eos_token_id=one("eos_token_id"),
    )


def hf_marian_to_tfm(state_dict: StateDict) -> dict[str, Tensor]:
    """Rename an HF ``MarianMTModel`` / ``MarianModel`` state dict to
    :class:`~tfm.nn.seq2seq.Seq2SeqTransformer` names. Query, key and value are fused (``qkv``
    for self-attention, ``kv`` for cross-attention). Embeddings come out as ``src_embed.tokens``
    / ``tgt_embed.tokens`` / ``lm_head`` (the shared matrix under each name it serves, read from
    ``shared`` when a tied copy was not saved); the sinusoidal tables as
    ``{src,tgt}_embed.positions.table`` (not trained; :func:`load_hf_marian` checks them)."""
    names = {k.removeprefix("model."): v for k, v in state_dict.items()}
    out = _fuse_attention(_rename(names, _HF_MARIAN_NAMES, "HF Marian"), "HF Marian")
    if "final_logits_bias" in out:
        out["final_logits_bias"] = out["final_logits_bias"].reshape(-1)
    if (shared := out.pop("shared.weight", None)) is not None:
        out.setdefault("src_embed.tokens.weight", shared)
        out.setdefault("tgt_embed.tokens.weight", shared)
    if "tgt_embed.tokens.weight" in out:
        out.setdefault("lm_head.weight", out["tgt_embed.tokens.weight"])
    return out


def load_hf_marian(
    source: nn.Module | StateDict | str | Path,
    config: Mapping[str, Any] | str | Path | None = None,
    **overrides: Any,
) -> Seq2SeqTransformer:
    """An HF Marian translation model (``MarianMTModel``, OPUS-MT) as a
    :class:`~tfm.nn.seq2seq.Seq2SeqTransformer`, in eval mode.

    ``source``: a ``MarianMTModel`` / ``MarianModel`` object, a folder with ``config.json`` and
    ``model.safetensors`` or ``pytorch_model.bin`` (what ``save_pretrained`` writes, sharded or
    not), a weights file (``config.json`` next to it or ``config=``), a state dict (with
    ``config=``: a dict, a ``MarianConfig`` or a ``config.json``), or a Hub repo id (fetched with
    ``huggingface_hub`` when installed and online). ``overrides`` change
    :class:`Seq2SeqTransformer` arguments (``dropout=0.0``). The tying of the checkpoint is kept:
    embeddings and output projection shared when they are the same matrix, separate otherwise.
    Decoding defaults come along: ``bos_token_id`` = ``decoder_start_token_id`` (the pad token of
    OPUS-MT) and ``eos_token_id``; OPUS-MT's generation config forbids the pad token
    (``bad_words_ids``) and forces EOS at the last step, which :func:`tfm.nn.generation.generate`
    does by default.
    """
    hf_sd, cfg_dict, what = _hf_marian_source(source, config)
    sd = hf_marian_to_tfm(hf_sd)
    cfg = hf_marian_config(cfg_dict)
    # the tying of this checkpoint, read off the tensors (a saved tied copy may be absent)
    src, tgt, head = (sd.get(k) for k in ("src_embed.tokens.weight", "tgt_embed.tokens.weight", "lm_head.weight"))
    if src is None or tgt is None or head is None:
        raise ConversionError(f"{what} has no token embeddings (shared / embed_tokens)")
    joint = cfg["tgt_vocab_size"] is None
    tied = torch.equal(tgt, head) and (not joint or torch.equal(src, tgt))
    if not tied:
        cfg["share_embeddings"] = False
    cfg = {**cfg, **overrides}
    model = Seq2SeqTransformer(**cfg)
    tables = {k: sd.pop(k) for k in ("src_embed.positions.table", "tgt_embed.positions.table") if k in sd}
    own = model.state_dict()
    if "final_logits_bias" not in sd:
        sd["final_logits_bias"] = torch.zeros(model.tgt_vocab_size)
    if cfg["share_embeddings"]:
        if not tied:
            raise ConversionError(f"{what}: share_embeddings=True, but the checkpoint's embeddings and output projection differ")
        sd = {k: v for k, v in sd.items() if k not in _tied_aliases(model)}
    unexpected = sorted(set(sd) - set(own))
    missing = sorted(set(own) - set(sd) - _tied_aliases(model))
    if unexpected or missing:
        raise ConversionError(f"{what} does not fit the model (config disagrees?): missing {missing[:3]}, unexpected {unexpected[:3]}")
    load_into(model, sd, what, strict=False)
    for name, table in tables.items():
        buf = model.get_buffer(name)
        if table.shape != buf.shape or not torch.allclose(table.float(), buf, atol=1e-4):
            raise ConversionError(f"{what}: {name} is not the sinusoidal table tfm computes (learned positions?)")
        buf.copy_(table)  # bit for bit the checkpoint's
    return model.eval()


def _hf_marian_source(
    source: nn.Module | StateDict | str | Path, config: Mapping[str, Any] | str | Path | None
) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """``(state dict, config dict, description for messages)`` of a Marian checkpoint source."""
    if isinstance(source, nn.Module):
        if config is None and not hasattr(source, "config"):
            raise ConversionError(f"{type(source).__name__} has no .config: pass config=")
        return dict(source.state_dict()), _read_config(config or source.config, "Marian"), f"HF {type(source).__name__}"
    return _hf_checkpoint(source, config, "Marian")
