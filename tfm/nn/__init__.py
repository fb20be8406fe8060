"""Plain-PyTorch Transformer backbone: no Lightning here.

>>> from tfm.nn import vit_tiny
>>> model = vit_tiny(num_classes=10)
>>> from tfm.nn import BertForPretraining, bert_mini
>>> model = BertForPretraining(bert_mini(vocab_size=8000))
>>> from tfm.nn import generate, transformer_small
>>> model = transformer_small(vocab_size=8000, pad_token_id=0, bos_token_id=1, eos_token_id=2)
"""

from .attention import KVCache, LayerCache, MultiHeadAttention, padding_mask
from .bert import (
    BERT_PRESETS,
    Bert,
    BertForPretraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertOutput,
    PretrainingOutput,
    bert_base,
    bert_large,
    bert_mini,
    bert_small,
    bert_tiny,
    create_bert,
    masked_positions,
    pretraining_loss,
)
from .config import ConfigError, TransformerConfig
from .dense import (
    CenterHead,
    LinearDecoder,
    ProgressiveDecoder,
    SimpleFeaturePyramid,
    ViTDetector,
    ViTSegmenter,
    box_iou,
    center_loss,
    center_targets,
    decode_centers,
    generalized_box_iou,
    masks_to_boxes,
    vit_feature_map,
)
from .embeddings import (
    LearnedPositionEmbedding,
    PatchEmbedding,
    SinusoidalPositionEmbedding,
    TextEmbedding,
    resize_pos_embed,
    sinusoid_table,
)
from .generation import (
    BeamKVCache,
    GenerationConfig,
    GenerationOutput,
    Hypothesis,
    beam_search,
    generate,
    greedy_search,
)
from .heads import MLMHead, NSPHead, SequenceClassificationHead, SpanHead, TokenClassificationHead
from .layers import DropPath, FeedForward, TransformerLayer
from .models import VIT_PRESETS, VisionTransformer, create_vit, vit_base, vit_large, vit_small, vit_tiny
from .seq2seq import (
    TRANSFORMER_PRESETS,
    Seq2SeqTransformer,
    create_transformer,
    label_smoothed_cross_entropy,
    transformer_base,
    transformer_big,
    transformer_small,
    transformer_tiny,
)
from .transformer import Decoder, Encoder, EncoderDecoder

__all__ = [
    "KVCache", "LayerCache", "MultiHeadAttention", "padding_mask", "ConfigError", "TransformerConfig",
    "LearnedPositionEmbedding", "PatchEmbedding", "SinusoidalPositionEmbedding", "TextEmbedding",
    "resize_pos_embed", "sinusoid_table", "DropPath", "FeedForward", "TransformerLayer",
    "VIT_PRESETS", "VisionTransformer", "create_vit", "vit_base", "vit_large", "vit_small", "vit_tiny",
    "Decoder", "Encoder", "EncoderDecoder",
    "BERT_PRESETS", "Bert", "BertForPretraining", "BertForQuestionAnswering", "BertForSequenceClassification",
    "BertForTokenClassification", "BertOutput", "PretrainingOutput", "bert_base", "bert_large", "bert_mini",
    "bert_small", "bert_tiny", "create_bert", "masked_positions", "pretraining_loss",
    "MLMHead", "NSPHead", "SequenceClassificationHead", "SpanHead", "TokenClassificationHead",
    "TRANSFORMER_PRESETS", "Seq2SeqTransformer", "create_transformer", "label_smoothed_cross_entropy", "transformer_base", "transformer_big",
    "transformer_small", "transformer_tiny",
    "CenterHead", "LinearDecoder", "ProgressiveDecoder", "SimpleFeaturePyramid", "ViTDetector", "ViTSegmenter", "box_iou",
    "center_loss", "center_targets", "decode_centers", "generalized_box_iou", "masks_to_boxes", "vit_feature_map",
    "BeamKVCache", "GenerationConfig", "GenerationOutput", "Hypothesis", "beam_search", "generate", "greedy_search",
]
