"""Representation learning: contrastive, metric and self-supervised objectives, exact under DDP.

One contrastive core (:func:`losskit.representation.core.contrast`: similarities, positive weights,
denominator set, temperature, denominator mode) carries every contrastive objective; pair-margin
losses share one pairs/distance/hinge/reducer core. ``gather=True`` makes a loss use the negatives of
every ``torch.distributed`` rank with exact whole-batch values and gradients
(:mod:`losskit.representation.distributed`).
"""

from . import distributed
from .contrastive import (
    CLIPLoss,
    CWCLLoss,
    DCLLoss,
    InfoNCELoss,
    MVDHELLoss,
    MVInfoNCELoss,
    NTXentLoss,
    SupConLoss,
    clip_loss,
    cwcl,
    dcl,
    info_nce,
    mv_dhel,
    mv_infonce,
    nt_xent,
    supcon,
)
from .metric import (
    BatchHardMiner,
    ContrastiveMarginLoss,
    MultiSimilarityLoss,
    MultiSimilarityMiner,
    PairMarginMiner,
    PairMiner,
    ProtoTripletLoss,
    TCMLoss,
    TripletMarginLoss,
    contrastive_margin,
    multi_similarity,
    proto_triplet,
    tcm,
    triplet_margin,
)
from .proxy import (
    ArcFaceLoss,
    CosFaceLoss,
    LargeMarginSoftmaxLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SphereFaceLoss,
    SubCenterArcFaceLoss,
    arcface,
    cosface,
    large_margin_softmax,
    proxy_anchor,
    proxy_nca,
    sphereface,
    subcenter_arcface,
)
from .redundancy import (
    BarlowTwinsLoss,
    MixedBarlowTwinsLoss,
    VICRegLoss,
    barlow_twins,
    mixed_barlow_twins,
    vicreg,
)
from .temperature import (
    ISogCLRLoss,
    ISogCLRState,
    TempNet,
    TempNetDROLoss,
    TempNetLMLoss,
    isogclr,
    tempnet_dro,
    tempnet_lm,
)

__all__ = [
    "info_nce", "InfoNCELoss", "nt_xent", "NTXentLoss", "supcon", "SupConLoss", "clip_loss", "CLIPLoss",
    "cwcl", "CWCLLoss", "dcl", "DCLLoss", "mv_infonce", "MVInfoNCELoss", "mv_dhel", "MVDHELLoss",
    "barlow_twins", "BarlowTwinsLoss", "vicreg", "VICRegLoss", "mixed_barlow_twins", "MixedBarlowTwinsLoss",
    "triplet_margin", "TripletMarginLoss", "contrastive_margin", "ContrastiveMarginLoss",
    "multi_similarity", "MultiSimilarityLoss", "tcm", "TCMLoss",
    "proto_triplet", "ProtoTripletLoss", "PairMiner", "MultiSimilarityMiner", "BatchHardMiner", "PairMarginMiner",
    "isogclr", "ISogCLRLoss", "ISogCLRState", "TempNet", "tempnet_dro", "TempNetDROLoss", "tempnet_lm",
    "TempNetLMLoss",
    "arcface", "ArcFaceLoss", "cosface", "CosFaceLoss", "subcenter_arcface", "SubCenterArcFaceLoss",
    "large_margin_softmax", "LargeMarginSoftmaxLoss", "sphereface", "SphereFaceLoss", "proxy_nca", "ProxyNCALoss",
    "proxy_anchor", "ProxyAnchorLoss",
]
