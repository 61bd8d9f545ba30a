"""swiperec: a two-tower recommender for swipe-style (like / nope) video apps."""

from swiperec.version import __version__

__all__ = ["__version__"]
