"""Representation learning: contrastive, metric and self-supervised objectives, exact under DDP.

One contrastive core (:func:`losskit.representation.core.contrast`: similarities, positive weights,
denominator set, temperature, denominator mode) carries every contrastive objective; pair-margin
losses share one pairs/distance/hinge/reducer core. ``gather=True`` makes a loss use the negatives of
every ``torch.distributed`` rank with exact whole-batch values and gradients
(:mod:`losskit.representation.distributed`).
"""

from . import distributed
from .condensation import (
    KRRSTLoss,
    gradient_match_distance,
    gradient_matching,
    krr_predict,
    krr_st,
)
from .contrastive import (
    CLIPLoss,
    CWCLLoss,
    DCLLoss,
    InfoNCELoss,
    MVDHELLoss,
    MVInfoNCELoss,
    NPairsLoss,
    NTXentLoss,
    SupConLoss,
    clip_loss,
    cwcl,
    dcl,
    info_nce,
    mv_dhel,
    mv_infonce,
    n_pairs,
    nt_xent,
    supcon,
)
from .energy_confusion import EnergyConfusionLoss, energy_confusion
from .koopman import KoopmanInformationLoss, koopman_information_loss, temporal_info_nce, von_neumann_entropy
from .metric import (
    BatchHardMiner,
    CircleLoss,
    ContrastiveMarginLoss,
    FastAPLoss,
    LiftedStructureLoss,
    MultiSimilarityLoss,
    MultiSimilarityMiner,
    PairMarginMiner,
    PairMiner,
    ProtoTripletLoss,
    TCMLoss,
    ThresholdReducer,
    TripletMarginLoss,
    circle_loss,
    contrastive_margin,
    fast_ap,
    lifted_structure,
    multi_similarity,
    proto_triplet,
    tcm,
    triplet_margin,
)
from .multihead import (
    AMCLBarlowTwinsLoss,
    AMCLLoss,
    AMCLSimSiamLoss,
    amcl,
    amcl_barlow_twins,
    amcl_omega,
    amcl_simsiam,
)
from .proxy import (
    ArcFaceLoss,
    CosFaceLoss,
    LargeMarginSoftmaxLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SoftTripleLoss,
    SphereFaceLoss,
    SubCenterArcFaceLoss,
    arcface,
    cosface,
    large_margin_softmax,
    proxy_anchor,
    proxy_nca,
    soft_triple,
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
from .selfsup import (
    DINOLoss,
    KoLeoLoss,
    MSNLoss,
    NegativeCosineLoss,
    SigLIPLoss,
    SwAVLoss,
    dino,
    dino_center,
    koleo,
    msn,
    negative_cosine,
    siglip,
    swav,
    swav_codes,
)
from .separability import ICNNLoss, MetrixLoss, icnn_loss, icnn_score, metrix
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
    "proxy_anchor", "ProxyAnchorLoss", "circle_loss", "CircleLoss", "lifted_structure", "LiftedStructureLoss",
    "fast_ap", "FastAPLoss", "soft_triple", "SoftTripleLoss", "n_pairs", "NPairsLoss",
    "negative_cosine", "NegativeCosineLoss", "dino", "DINOLoss", "dino_center", "swav", "SwAVLoss", "swav_codes",
    "siglip", "SigLIPLoss", "ThresholdReducer", "koleo", "KoLeoLoss", "msn", "MSNLoss",
    "krr_st", "KRRSTLoss", "krr_predict", "gradient_match_distance", "gradient_matching",
    "icnn_loss", "ICNNLoss", "icnn_score", "metrix", "MetrixLoss",
    "amcl", "AMCLLoss", "amcl_omega", "amcl_simsiam", "AMCLSimSiamLoss", "amcl_barlow_twins", "AMCLBarlowTwinsLoss",
    "energy_confusion", "EnergyConfusionLoss",
    "koopman_information_loss", "KoopmanInformationLoss", "temporal_info_nce", "von_neumann_entropy",
]
