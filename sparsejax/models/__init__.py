"""Flax NNX model zoo for pruning research.

Every model is a plain ``nnx.Module`` called as ``model(x) -> logits (batch,
num_classes)`` on NHWC images / ``(batch, length)`` sequences, with no pruning
built in: masks from :mod:`sparsejax.masks` act on its parameters through

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    model = nnx.merge(graphdef, sparsejax.apply_mask(params, mask), rest)

Kernels follow Flax's layout (Dense ``(in, out)``, Conv ``(kh, kw, in, out)``);
attention kernels keep a heads axis (see :mod:`sparsejax.models.transformer`).
Models with BatchNorm / Dropout start in training mode; ``model.eval()`` and
``model.train()`` switch (Flax NNX 0.12 convention).

==================  ====================================  ===============================
name                class                                 parameters (default shapes)
==================  ====================================  ===============================
``lenet300100``     :class:`LeNet300100`                  266,610 (28x28x1)
``mlp``             :class:`MLP` / :func:`mnist1d_mlp`    276,010 (40-500-500-10)
``lenet5``          :class:`LeNet5`                       431,080 (28x28x1)
``conv2/4/6``       :class:`Conv2` / 4 / 6                4,301,642 / 2,425,930 / 2,262,602
``mnist1d_cnn``     :class:`MNIST1DCNN`                   5,210 (length 40)
``resnet20/56``     :class:`ResNet20` / :class:`ResNet56`  269,722 / 853,018 (option A)
``vgg16``           :class:`VGG16`                        14,724,042 (512 → 10 head)
``transformer``     :class:`TransformerClassifier`        configurable
(none)              :class:`DecoderLM` (GPT-style LM)     111,008,256 (vocab 32,768, 768 x 12)
==================  ====================================  ===============================
"""

from sparsejax.models._mask import Mask
from sparsejax.models.conv import Conv2, Conv4, Conv6, ConvNet
from sparsejax.models.decoder import DecoderBlock, DecoderLM, next_token_loss
from sparsejax.models.lenet import LeNet5
from sparsejax.models.mlp import MLP, LeNet300100, mnist1d_mlp
from sparsejax.models.mnist1d import MNIST1DCNN
from sparsejax.models.registry import MODEL_NAMES, create_model
from sparsejax.models.resnet import BasicBlock, CifarResNet, ResNet20, ResNet56
from sparsejax.models.transformer import (
    MultiHeadSelfAttention,
    TransformerBlock,
    TransformerClassifier,
    patchify,
)
from sparsejax.models.vgg import VGG, VGG16, VGG16_CONFIG

__all__ = [
    "MLP",
    "MNIST1DCNN",
    "MODEL_NAMES",
    "VGG",
    "VGG16",
    "VGG16_CONFIG",
    "BasicBlock",
    "CifarResNet",
    "Conv2",
    "Conv4",
    "Conv6",
    "ConvNet",
    "DecoderBlock",
    "DecoderLM",
    "LeNet5",
    "LeNet300100",
    "Mask",
    "MultiHeadSelfAttention",
    "ResNet20",
    "ResNet56",
    "TransformerBlock",
    "TransformerClassifier",
    "create_model",
    "mnist1d_mlp",
    "next_token_loss",
    "patchify",
]
