"""pirid_lite — a thin, tested implementation of PIRID (Prototype-based Inter-camera Learning for
intra-camera supervised person re-identification) backing a sequence of teaching notebooks.

Modules: ``config`` (§3.1 defaults), ``datasets`` (loaders + synthetic benchmark), ``data`` (transforms,
P-K sampler), ``model`` (§2.2), ``memory`` (Eq. 1-2), ``losses`` (Eq. 3-7), ``prototypes`` (§2.3),
``trainer`` (§2.4), ``evaluate`` (CMC/mAP), ``results`` (Tables 1-2), ``viz`` (figures).
"""
from .config import PiridConfig, get_config

__all__ = ["PiridConfig", "get_config"]
__version__ = "0.1.0"
