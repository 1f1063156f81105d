"""Augmentation presets by name: `register_augmentation`, `get_augmentation`,
`list_augmentations`. A preset is a function returning its list of albumentations transforms
(see `embedding_net.data.augmentation.build_augmentation` for why these); `data.augmentation`
in the config names one.
"""

import albumentations as A
import cv2

from embedding_net.registry import Registry

_PRESETS = Registry("augmentation preset")

# Borders are filled by repeating the edge pixels: right for dark-on-light scans and
# light-on-dark images alike, where a constant fill (black) would draw a frame on white paper.
_BORDER = cv2.BORDER_REPLICATE


def register_augmentation(name, **info):
    """Registers a function `() -> [transforms]` as the preset `name`; returns a decorator."""
    return _PRESETS.register(name, settings=(), **info)


def get_augmentation(name):
    """The preset function registered as `name` (a `ConfigError` names the known ones)."""
    return _PRESETS.get(name)


def list_augmentations():
    """The registered preset names, sorted."""
    return _PRESETS.names()


@register_augmentation("none")
def no_augmentation():
    return []


@register_augmentation("light")
def light():
    """A small affine distortion half of the time."""
    return [A.Affine(translate_percent=(-0.04, 0.04), scale=(0.95, 1.05), rotate=(-5, 5),
                     border_mode=_BORDER, p=0.5)]


@register_augmentation("default")
def koch_affine():
    """Koch et al. 2015 (Siamese one-shot Omniglot): rotation +-10 degrees, shear +-0.3
    (+-17 degrees), scale 0.8-1.2, translation +-2 px of 105; a mild grid distortion and
    brightness / contrast jitter."""
    return [
        A.Affine(translate_percent=(-0.02, 0.02), scale=(0.8, 1.2), rotate=(-10, 10), shear=(-17, 17),
                 border_mode=_BORDER, p=0.8),
        A.GridDistortion(num_steps=5, distort_limit=0.1, border_mode=_BORDER, p=0.25),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3),
    ]
