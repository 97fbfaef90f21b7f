"""Synthetic "bags of ice" scenes with exact ground truth (numpy + OpenCV only).

One fixed CCTV view (default 640x480, any size scales with it) of an ice storage
area: an insulated-panel back wall with a walk-in freezer door, a concrete floor
with perspective seams, an open-shelf ice merchandiser on the left (zone
``storage``), a painted cart bay on the right (zone ``cart``) where a platform
hand cart stands, and the open floor between them (zone ``floor``).  Bags of ice
(clear or white plastic pillows with a printed "ICE" label) lie on the shelves,
are stacked on the cart, lie on the floor or are carried by people walking by.

Ground-truth conventions (what the labels mean, exactly):

* A bag's ``box`` is the tight pixel box of the bag shape as drawn into the
  frame: ``x1, y1`` are the first covered column/row, ``x2, y2`` one past the
  last covered column/row (pixel-edge coordinates, the convention of YOLO's
  normalised labels).  The bag shape is drawn with a binary mask, so every
  pixel inside the shape changes and every pixel outside it does not (before
  the whole-frame lighting/blur/noise of ``effects=True``).
* The full bag is labelled even where another bag, a person or the cart hides
  part of it; a bag with less than ``MIN_VISIBLE`` (30 %) of its pixels visible
  (hidden by something drawn in front of it or outside the frame) is drawn but
  not labelled.  The part of a bag outside the frame is not part of its box.
* A bag's zone is the first of ``ZONE_NAMES`` whose polygon contains the
  bottom-centre of its box, ``((x1 + x2) / 2, y2)``, by
  ``cv2.pointPolygonTest(...) >= 0`` (the product's default anchor rule);
  ``None`` when no polygon contains it.
* People, the cart, the merchandiser's "ICE" sign and cardboard boxes are never
  labelled: class 0 is only ``ice_bag``.

Everything is seeded: the same seed gives byte-identical frames.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import cv2
import numpy as np

CLASS_NAME = "ice_bag"
ZONE_NAMES = ("storage", "cart", "floor")
MIN_VISIBLE = 0.3

# Scene layout as fractions of (width, height).
_ZONE_FRACTIONS = (
    ("storage", ((0.03, 0.07), (0.38, 0.07), (0.38, 0.73), (0.03, 0.73))),
    ("cart", ((0.60, 0.50), (0.99, 0.50), (0.99, 0.98), (0.56, 0.98))),
    ("floor", ((0.40, 0.44), (0.99, 0.44), (0.99, 0.50), (0.60, 0.50),
               (0.56, 0.98), (0.02, 0.98), (0.02, 0.77), (0.40, 0.77))),
)
_WALL_Y = 0.42
_STORAGE = (0.03, 0.07, 0.38, 0.73)          # x1, y1, x2, y2 of the merchandiser front
_HEADER_Y = 0.15                             # bottom of its "ICE" sign
_SHELF_YS = (0.33, 0.52, 0.705)              # shelf surfaces (front edge)
_DOOR = (0.45, 0.07, 0.58, _WALL_Y)          # walk-in freezer door on the back wall
_BAG_SIZE = (0.11, 0.085)                    # bag width, height at depth scale 1
_PERSON_HEIGHT = 0.44                        # person height at depth scale 1
_CART_SIZE = (0.25, 0.065, 0.20)             # platform width, depth; handle height

_SHIRTS = ((40, 40, 45), (110, 60, 30), (40, 60, 150), (30, 110, 50), (0, 120, 240),
           (130, 130, 130), (20, 20, 110), (90, 40, 90), (30, 200, 230), (60, 90, 60))
_PANTS = ((25, 25, 30), (60, 40, 30), (70, 70, 75), (90, 110, 130), (35, 35, 60))
_SKINS = ((150, 180, 225), (110, 140, 190), (70, 95, 140), (45, 65, 100), (170, 195, 235))
_LABEL_COLOURS = ((170, 80, 20), (200, 120, 0), (40, 40, 190), (160, 60, 40), (60, 130, 30))


@dataclass(frozen=True)
class Bag:
    """One labelled bag: tight box (x1, y1, x2, y2, pixel edges), zone, visible fraction."""

    box: tuple[int, int, int, int]
    zone: str | None
    visible: float = 1.0

    @property
    def anchor(self) -> tuple[float, float]:
        """Bottom-centre of the box: the point that decides the zone."""
        x1, _, x2, y2 = self.box
        return ((x1 + x2) / 2.0, float(y2))


class Sprite(NamedTuple):
    """A drawable: colour (h, w, 3 float32) and alpha (h, w float32, 0 outside the shape)."""

    image: np.ndarray
    alpha: np.ndarray


@dataclass(frozen=True)
class BagPose:
    cx: float          # centre x of the bag
    bottom: float      # bottom y of the (unrotated) bag
    width: int
    height: int
    angle: float       # degrees
    style: int
    depth: tuple       # painter's order key


@dataclass(frozen=True)
class PersonPose:
    x: float
    feet: float
    height: int
    phase: float
    style: int
    carrying: bool
    depth: tuple


@dataclass(frozen=True)
class CartPose:
    left: float
    front: float
    scale: float
    style: int
    depth: tuple


@dataclass(frozen=True)
class BoxPose:
    """A cardboard box on the floor: a distractor, never labelled."""

    cx: float
    bottom: float
    size: int
    style: int
    depth: tuple


# --------------------------------------------------------------------------- zones

def scene_zones(width: int = 640, height: int = 480) -> dict[str, list[tuple[int, int]]]:
    """Zone polygons in image coordinates (closed implicitly) for a frame of this size."""
    return {name: [(int(round(fx * width)), int(round(fy * height))) for fx, fy in pts]
            for name, pts in _ZONE_FRACTIONS}


def zone_of(point: tuple[float, float], zones: dict[str, list[tuple[int, int]]]) -> str | None:
    """First zone (in dict order) whose polygon contains the point (edges included)."""
    for name, polygon in zones.items():
        contour = np.asarray(polygon, np.float32).reshape(-1, 1, 2)
        if cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), False) >= 0:
            return name
    return None


def count_by_zone(bags: Sequence[Bag]) -> dict[str, int]:
    """Number of labelled bags per zone (bags outside every zone are not counted)."""
    counts = {name: 0 for name in ZONE_NAMES}
    for bag in bags:
        if bag.zone in counts:
            counts[bag.zone] += 1
    return counts


def depth_scale(y: float, height: int) -> float:
    """Apparent size of an object standing on the floor at image row y (1.0 near 0.85 H)."""
    return max(0.5, 0.55 + 0.6 * (y / height - _WALL_Y) / (1.0 - _WALL_Y))


# --------------------------------------------------------------------------- sprites

def _bag_texture(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Unrotated bag look (h, w): colour and alpha (translucent plastic, opaque print)."""
    clear = rng.random() < 0.6
    base = np.array((242, 232, 214) if clear else (236, 236, 233), np.float32)
    base += rng.uniform(-10, 6, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx + 0.5) / w * 2 - 1
    v = (yy + 0.5) / h * 2 - 1
    rho = np.abs(u) ** 4 + np.abs(v) ** 4
    cubes = cv2.resize(rng.random((max(2, h // 6), max(2, w // 6))).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.random((max(2, h // 3), max(2, w // 3))).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_LINEAR)
    shade = 1.04 - 0.38 * np.minimum(rho, 1.0) ** 1.5 - 0.10 * v + 0.05 * u * rng.uniform(-1, 1)
    shade = shade * (0.80 + 0.16 * cubes + 0.07 * fine)
    image = base * shade[..., None]
    if clear:   # ice cubes seen through clear plastic look bluish-grey in the gaps
        image -= np.clip(0.45 - cubes, 0, None)[..., None] * np.array((20, 35, 55), np.float32)
    alpha = np.full((h, w), rng.uniform(0.86, 0.95), np.float32)
    _draw_seal(rng, image, w, h)
    _draw_label(rng, image, alpha, w, h)
    _draw_highlight(rng, image, w, h)
    return np.clip(image, 0, 255), alpha


def _draw_seal(rng: np.random.Generator, image: np.ndarray, w: int, h: int) -> None:
    """Crimped heat seal at one short end of the bag."""
    seal = max(2, int(0.09 * w))
    cols = slice(0, seal) if rng.random() < 0.5 else slice(w - seal, w)
    stripes = 0.82 + 0.12 * (np.arange(h) // 2 % 2)
    image[:, cols] *= stripes[:, None, None]


def _draw_label(rng: np.random.Generator, image: np.ndarray, alpha: np.ndarray, w: int, h: int) -> None:
    """Printed label: a coloured band with white "ICE", or blue "ICE" printed on the bag."""
    colour = np.array(_LABEL_COLOURS[rng.integers(len(_LABEL_COLOURS))], np.float32)
    band_h = max(3, int(h * rng.uniform(0.34, 0.46)))
    band_w = max(4, int(w * rng.uniform(0.50, 0.70)))
    x0 = (w - band_w) // 2 + int(rng.integers(-w // 12, w // 12 + 1))
    y0 = (h - band_h) // 2 + int(rng.integers(-h // 12, h // 12 + 1))
    banded = rng.random() < 0.7
    if banded:
        shade = image[y0:y0 + band_h, x0:x0 + band_w].mean(axis=2, keepdims=True) / 235.0
        image[y0:y0 + band_h, x0:x0 + band_w] = colour * shade
        alpha[y0:y0 + band_h, x0:x0 + band_w] = 1.0
    text_colour = (245, 245, 245) if banded else tuple(float(c) for c in colour)
    scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_DUPLEX, max(3, int(band_h * 0.62)), 2)
    thickness = max(1, int(round(band_h / 9)))
    (tw, th), _ = cv2.getTextSize("ICE", cv2.FONT_HERSHEY_DUPLEX, scale, thickness)
    if tw > band_w * 0.92:
        scale *= band_w * 0.92 / tw
        (tw, th), _ = cv2.getTextSize("ICE", cv2.FONT_HERSHEY_DUPLEX, scale, thickness)
    org = (x0 + (band_w - tw) // 2, y0 + (band_h + th) // 2)
    ink = np.zeros((h, w), np.uint8)
    cv2.putText(ink, "ICE", org, cv2.FONT_HERSHEY_DUPLEX, scale, 255, thickness, cv2.LINE_AA)
    ink_f = (ink.astype(np.float32) / 255.0)[..., None]
    image[:] = image * (1 - ink_f) + np.asarray(text_colour, np.float32) * ink_f


def _draw_highlight(rng: np.random.Generator, image: np.ndarray, w: int, h: int) -> None:
    """Specular streak of the plastic film."""
    glare = np.zeros(image.shape[:2], np.float32)
    centre = (int(w * rng.uniform(0.2, 0.8)), int(h * rng.uniform(0.15, 0.35)))
    axes = (max(1, int(w * rng.uniform(0.12, 0.3))), max(1, int(h * 0.06)))
    cv2.ellipse(glare, centre, axes, float(rng.uniform(-15, 15)), 0, 360, 1.0, -1, cv2.LINE_AA)
    glare = cv2.GaussianBlur(glare, (0, 0), max(0.8, h * 0.04))
    image += (glare * rng.uniform(25, 60))[..., None]


def bag_sprite(style: int, width: int, height: int, angle: float) -> Sprite:
    """A bag of ice of this unrotated size, rotated by angle degrees, cropped to its shape.

    The shape is a superellipse "pillow"; its binary mask is computed analytically
    in the bag's own frame, so the sprite's extent is exactly the drawn shape.
    """
    rng = np.random.default_rng(style)
    texture, tex_alpha = _bag_texture(rng, width, height)
    exponent = rng.uniform(3.2, 5.0)
    side = int(math.ceil(math.hypot(width, height))) + 2
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    mid = (side - 1) / 2.0
    # destination (sprite) pixel -> source (texture) pixel, rotation about the centres
    to_texture = np.array([[c, s, (width - 1) / 2.0 - c * mid - s * mid],
                           [-s, c, (height - 1) / 2.0 + s * mid - c * mid]], np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    image = cv2.warpAffine(texture, to_texture, (side, side), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(tex_alpha, to_texture, (side, side), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) - mid
    u = (c * xx + s * yy) / (width / 2.0)
    v = (-s * xx + c * yy) / (height / 2.0)
    inside = np.abs(u) ** exponent + np.abs(v) ** exponent <= 1.0
    edge = np.abs(u) ** exponent + np.abs(v) ** exponent > 0.86
    image[edge] *= 0.86
    return _crop_sprite(Sprite(image, np.where(inside, np.maximum(alpha, 0.86), 0.0).astype(np.float32)))


def _crop_sprite(sprite: Sprite) -> Sprite:
    rows = np.flatnonzero(sprite.alpha.any(axis=1))
    cols = np.flatnonzero(sprite.alpha.any(axis=0))
    if rows.size == 0:
        return sprite
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return Sprite(sprite.image[r0:r1, c0:c1], sprite.alpha[r0:r1, c0:c1])


class _Pen:
    """Draws each shape twice: antialiased into a colour image and binary into its mask."""

    def __init__(self, height: int, width: int):
        self.image = np.zeros((height, width, 3), np.uint8)
        self.mask = np.zeros((height, width), np.uint8)

    def line(self, p, q, colour, thick) -> None:
        p, q = (int(p[0]), int(p[1])), (int(q[0]), int(q[1]))
        cv2.line(self.image, p, q, colour, max(1, int(thick)), cv2.LINE_AA)
        cv2.line(self.mask, p, q, 255, max(1, int(thick)), cv2.LINE_8)

    def poly(self, points, colour) -> None:
        pts = np.round(np.asarray(points)).astype(np.int32)
        cv2.fillPoly(self.image, [pts], colour, cv2.LINE_AA)
        cv2.fillPoly(self.mask, [pts], 255, cv2.LINE_8)

    def disc(self, centre, axes, colour) -> None:
        centre = (int(centre[0]), int(centre[1]))
        axes = (max(1, int(axes[0])), max(1, int(axes[1])))
        cv2.ellipse(self.image, centre, axes, 0, 0, 360, colour, -1, cv2.LINE_AA)
        cv2.ellipse(self.mask, centre, axes, 0, 0, 360, 255, -1, cv2.LINE_8)


@dataclass(frozen=True)
class _Outfit:
    shirt: tuple
    pants: tuple
    skin: tuple
    hat: bool
    hi_vis: bool


def _outfit(style: int) -> _Outfit:
    rng = np.random.default_rng(style)
    shirt = _SHIRTS[rng.integers(len(_SHIRTS))]
    pants = _PANTS[rng.integers(len(_PANTS))]
    skin = _SKINS[rng.integers(len(_SKINS))]
    hat = bool(rng.random() < 0.4)
    return _Outfit(shirt, pants, skin, hat, bool(rng.random() < 0.5))


def person_sprite(style: int, height: int, phase: float, carrying: bool) -> Sprite:
    """A walking person (head, torso, arms, legs), feet at the bottom centre of the sprite."""
    outfit = _outfit(style)
    w = int(0.62 * height) | 1
    pen = _Pen(height + 1, w)
    swing = 0.38 * math.sin(phase)
    _draw_legs(pen, outfit, w // 2, height, swing)
    _draw_torso(pen, outfit, w // 2, height)
    _draw_arms(pen, outfit, w // 2, height, swing, carrying)
    _draw_head(pen, outfit, w // 2, height)
    shade = np.linspace(1.1, 0.75, w, dtype=np.float32)[None, :, None]
    return _crop_sprite(Sprite(pen.image.astype(np.float32) * shade, (pen.mask > 0).astype(np.float32)))


def _draw_legs(pen: _Pen, outfit: _Outfit, cx: int, h: int, swing: float) -> None:
    hip_y, leg = 0.53 * h, 0.45 * h
    for side, sign in ((1, -1), (-1, 1)):          # far leg first (darker), then near leg
        hip = (cx + side * 0.045 * h, hip_y)
        foot = (hip[0] + math.sin(sign * swing) * leg, hip_y + math.cos(swing) * leg)
        pen.line(hip, foot, tuple(int(c * (0.75 if side == 1 else 1.0)) for c in outfit.pants), 0.085 * h)
        pen.disc((foot[0] + 0.02 * h, foot[1]), (0.05 * h, 0.022 * h), (20, 20, 25))


def _draw_torso(pen: _Pen, outfit: _Outfit, cx: int, h: int) -> None:
    pen.poly([(cx - 0.13 * h, 0.17 * h), (cx + 0.13 * h, 0.17 * h), (cx + 0.105 * h, 0.56 * h),
              (cx - 0.105 * h, 0.56 * h)], outfit.shirt)
    if outfit.hi_vis:                                  # reflective stripes, else a zip line
        for y in (0.36, 0.46):
            pen.line((cx - 0.115 * h, y * h), (cx + 0.115 * h, y * h), (200, 205, 200), 0.018 * h)
    else:
        pen.line((cx, 0.19 * h), (cx, 0.55 * h), tuple(int(c * 0.7) for c in outfit.shirt), 0.012 * h)


def _draw_arms(pen: _Pen, outfit: _Outfit, cx: int, h: int, swing: float, carrying: bool) -> None:
    for side, sign in ((-1, 1), (1, -1)):
        shoulder = (cx + side * 0.12 * h, 0.19 * h)
        if carrying:                                   # hands together in front, at the waist
            hand = (cx + side * 0.07 * h, 0.45 * h)
        else:
            hand = (shoulder[0] + math.sin(-sign * swing) * 0.2 * h + side * 0.02 * h, 0.47 * h)
        pen.line(shoulder, hand, tuple(int(c * 0.85) for c in outfit.shirt), 0.06 * h)
        pen.disc(hand, (0.028 * h, 0.028 * h), outfit.skin)


def _draw_head(pen: _Pen, outfit: _Outfit, cx: int, h: int) -> None:
    pen.line((cx, 0.13 * h), (cx, 0.18 * h), outfit.skin, 0.05 * h)
    pen.disc((cx, 0.09 * h), (0.055 * h, 0.068 * h), outfit.skin)
    hair = outfit.shirt if outfit.hat else (30, 35, 45)
    cv2.ellipse(pen.image, (cx, int(0.085 * h)), (int(0.058 * h) + 1, int(0.066 * h) + 1), 0, 180, 360,
                hair, -1, cv2.LINE_AA)


def cart_sprite(style: int, scale: float, width: int, height: int) -> tuple[Sprite, tuple[int, int]]:
    """A platform hand cart; returns the sprite and the offset of the platform's front-left corner."""
    rng = np.random.default_rng(style)
    frame = ((150, 110, 40), (60, 60, 170), (120, 120, 125), (40, 120, 60))[rng.integers(4)]
    pw = int(_CART_SIZE[0] * width * scale)
    pd = int(_CART_SIZE[1] * height * scale)
    hh = int(_CART_SIZE[2] * height * scale)
    lip = max(2, int(0.018 * height * scale))
    wheel = max(3, int(0.02 * height * scale))
    inset = int(0.04 * pw)
    ox, oy = 4, hh + pd + 2                      # front-left corner of the platform in the sprite
    image = np.zeros((oy + lip + 2 * wheel + 4, pw + 8, 3), np.uint8)
    mask = np.zeros(image.shape[:2], np.uint8)
    tube = max(2, int(0.012 * width * scale))
    back_y = oy - pd
    for x in (ox + inset + tube, ox + pw - inset - tube):   # handle uprights and grip bar
        cv2.line(image, (x, back_y), (x, back_y - hh), frame, tube, cv2.LINE_AA)
        cv2.line(mask, (x, back_y), (x, back_y - hh), 255, tube)
    grip = (ox + inset + tube, back_y - hh), (ox + pw - inset - tube, back_y - hh)
    cv2.line(image, grip[0], grip[1], (40, 40, 40), tube + 1, cv2.LINE_AA)
    cv2.line(mask, grip[0], grip[1], 255, tube + 1)
    for x in (ox + 2 * wheel, ox + pw - 2 * wheel):           # wheels
        centre = (x, oy + lip + wheel)
        cv2.ellipse(image, centre, (wheel, wheel), 0, 0, 360, (25, 25, 25), -1, cv2.LINE_AA)
        cv2.ellipse(mask, centre, (wheel, wheel), 0, 0, 360, 255, -1)
    deck = np.array([(ox, oy), (ox + pw, oy), (ox + pw - inset, back_y), (ox + inset, back_y)], np.int32)
    cv2.fillPoly(image, [deck], (55, 58, 60), cv2.LINE_AA)
    cv2.fillPoly(mask, [deck], 255)
    for k in range(1, 8):                                     # ribbed rubber mat
        y = back_y + k * pd // 8
        cv2.line(image, (ox + inset - 1, y), (ox + pw - inset + 1, y), (40, 42, 44), 1)
    cv2.rectangle(image, (ox, oy), (ox + pw, oy + lip), frame, -1)
    cv2.rectangle(mask, (ox, oy), (ox + pw, oy + lip), 255, -1)
    sprite = Sprite(image.astype(np.float32), (mask > 0).astype(np.float32))
    return sprite, (ox, oy)


def box_sprite(style: int, size: int) -> Sprite:
    """A taped cardboard box (a distractor)."""
    rng = np.random.default_rng(style)
    brown = np.array((60, 110, 160), np.float32) * rng.uniform(0.8, 1.15)
    w, h, top = size, int(size * 0.8), int(size * 0.3)
    image = np.zeros((h + top, w + top // 2, 3), np.float32)
    mask = np.zeros(image.shape[:2], np.uint8)
    face = np.array([(0, top), (w, top), (w, top + h - 1), (0, top + h - 1)], np.int32)
    lid = np.array([(0, top), (top // 2, 0), (w + top // 2 - 1, 0), (w, top)], np.int32)
    side = np.array([(w, top), (w + top // 2 - 1, 0), (w + top // 2 - 1, h - 1), (w, top + h - 1)], np.int32)
    for pts, k in ((face, 0.85), (lid, 1.05), (side, 0.65)):
        cv2.fillPoly(image, [pts], tuple(float(c * k) for c in brown))
        cv2.fillPoly(mask, [pts], 255)
    cv2.line(image, (top // 4, top // 2), (w + top // 4, top // 2), (150, 170, 185), max(1, size // 12))
    return Sprite(image, (mask > 0).astype(np.float32))


# --------------------------------------------------------------------------- background

def _px(fx: float, fy: float, width: int, height: int) -> tuple[int, int]:
    return int(round(fx * width)), int(round(fy * height))


def render_background(rng: np.random.Generator, width: int = 640, height: int = 480) -> np.ndarray:
    """The static scene (walls, door, floor, merchandiser, cart bay) as float32 BGR."""
    image = np.zeros((height, width, 3), np.uint8)
    wall_y = int(_WALL_Y * height)
    _draw_wall(rng, image, wall_y)
    _draw_door(rng, image, width, height)
    _draw_floor(rng, image, wall_y)
    _draw_storage(rng, image, width, height)
    _draw_cart_bay(image, width, height)
    return image.astype(np.float32)


def _draw_wall(rng: np.random.Generator, image: np.ndarray, wall_y: int) -> None:
    width = image.shape[1]
    tone = np.array((205, 210, 210), np.float32) + rng.uniform(-25, 20, 3)
    ramp = np.linspace(0.82, 1.0, wall_y, dtype=np.float32)[:, None, None]
    image[:wall_y] = np.clip(tone * ramp, 0, 255).astype(np.uint8)
    step = max(8, int(width * rng.uniform(0.08, 0.11)))
    for x in range(int(rng.integers(step)), width, step):           # insulated panel seams
        cv2.line(image, (x, 0), (x, wall_y), tuple(float(c) * 0.8 for c in tone), 1)
    cv2.rectangle(image, (0, wall_y - max(2, wall_y // 25)), (width, wall_y), (70, 75, 80), -1)
    sign = (int(width * 0.66), int(wall_y * 0.25))
    cv2.rectangle(image, sign, (sign[0] + int(width * 0.2), sign[1] + int(wall_y * 0.16)), (20, 140, 230), -1)
    cv2.putText(image, "COLD STORE", (sign[0] + 4, sign[1] + int(wall_y * 0.12)), cv2.FONT_HERSHEY_SIMPLEX,
                width / 1700, (20, 20, 20), max(1, width // 640), cv2.LINE_AA)


def _draw_door(rng: np.random.Generator, image: np.ndarray, width: int, height: int) -> None:
    x1, y1 = _px(_DOOR[0], _DOOR[1], width, height)
    x2, y2 = _px(_DOOR[2], _DOOR[3], width, height)
    steel = np.linspace(175, 140, x2 - x1, dtype=np.float32) + rng.uniform(-15, 15)
    image[y1:y2, x1:x2] = np.clip(steel[None, :, None] * np.array((1.0, 1.0, 0.97)), 0, 255).astype(np.uint8)
    cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (90, 95, 100), max(2, width // 200))
    hx = x2 - (x2 - x1) // 6
    cv2.line(image, (hx, y1 + (y2 - y1) // 3), (hx, y1 + (y2 - y1) * 2 // 3), (50, 50, 55), max(2, width // 160))
    win = (x1 + (x2 - x1) // 4, y1 + (y2 - y1) // 6)
    cv2.rectangle(image, win, (x2 - (x2 - x1) // 4, y1 + (y2 - y1) // 3), (120, 100, 80), -1)
    cv2.putText(image, "-18C", (x1 + 3, y1 + (y2 - y1) // 2), cv2.FONT_HERSHEY_SIMPLEX, width / 1600,
                (30, 30, 200), max(1, width // 640), cv2.LINE_AA)


def _draw_floor(rng: np.random.Generator, image: np.ndarray, wall_y: int) -> None:
    height, width = image.shape[:2]
    rows = height - wall_y
    tone = np.array((118, 124, 122), np.float32) + rng.uniform(-25, 20, 3)
    grain = cv2.resize(rng.random((max(2, rows // 8), max(2, width // 8))).astype(np.float32), (width, rows),
                       interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(0.78, 1.05, rows, dtype=np.float32)[:, None]
    floor = tone * (ramp * (0.9 + 0.18 * grain))[..., None]
    image[wall_y:] = np.clip(floor, 0, 255).astype(np.uint8)
    seam = tuple(float(c) * 0.72 for c in tone)
    for k in range(-14, 15):                                          # seams towards the vanishing point
        top = (int(width * (0.5 + k * 0.07)), wall_y)
        bottom = (int(width * (0.5 + k * 0.19)), height)
        cv2.line(image, top, bottom, seam, 1, cv2.LINE_AA)
    for j in range(12):                                               # cross seams, perspective spacing
        y = int(height * 0.05 + (height * 0.95) / (1 + 0.42 * j))
        if y <= wall_y:
            break
        cv2.line(image, (0, y), (width, y), seam, 1, cv2.LINE_AA)


def _draw_storage(rng: np.random.Generator, image: np.ndarray, width: int, height: int) -> None:
    x1, y1 = _px(_STORAGE[0], _STORAGE[1], width, height)
    x2, y2 = _px(_STORAGE[2], _STORAGE[3], width, height)
    depth = int(0.03 * width)
    side = np.array([(x2, y1), (x2 + depth, y1 + depth), (x2 + depth, y2 - 3 * depth), (x2, y2)], np.int32)
    shadow = np.array([(x1 - 4, y2), (x2 + 2 * depth, y2 - 2 * depth), (x2 + 3 * depth, y2 + depth // 2),
                       (x1, y2 + depth // 2)], np.int32)
    cv2.fillPoly(image, [shadow], (60, 62, 62), cv2.LINE_AA)
    cv2.fillPoly(image, [side], (150, 150, 155), cv2.LINE_AA)
    body = np.array((225, 225, 222), np.float32) + rng.uniform(-15, 10)
    cv2.rectangle(image, (x1, y1), (x2, y2), tuple(float(c) for c in body), -1)
    header = _px(0, _HEADER_Y, width, height)[1]
    cv2.rectangle(image, (x1, y1), (x2, header), (150, 70, 10), -1)
    scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_DUPLEX, int((header - y1) * 0.6), 3)
    (tw, th), _ = cv2.getTextSize("ICE", cv2.FONT_HERSHEY_DUPLEX, scale, 3)
    cv2.putText(image, "ICE", ((x1 + x2 - tw) // 2, (y1 + header + th) // 2), cv2.FONT_HERSHEY_DUPLEX,
                scale, (250, 250, 250), max(1, int(3 * width / 640)), cv2.LINE_AA)
    margin = int(0.015 * width)
    ix1, iy1, ix2, iy2 = x1 + margin, header + margin // 2, x2 - margin, y2 - margin // 2
    ramp = np.linspace(1.0, 0.62, iy2 - iy1, dtype=np.float32)[:, None, None]
    frost = cv2.resize(rng.random((8, 8)).astype(np.float32), (ix2 - ix1, iy2 - iy1))[..., None]
    inner = np.array((150, 128, 105), np.float32) * ramp * (0.9 + 0.2 * frost)
    image[iy1:iy2, ix1:ix2] = np.clip(inner, 0, 255).astype(np.uint8)
    for fy in _SHELF_YS:
        sy = int(fy * height)
        shelf = np.array([(ix1, sy), (ix2, sy), (ix2 - margin, sy - int(0.028 * height)),
                          (ix1 + margin, sy - int(0.028 * height))], np.int32)
        cv2.fillPoly(image, [shelf], (175, 172, 168), cv2.LINE_AA)
        cv2.rectangle(image, (ix1, sy), (ix2, sy + max(2, int(0.008 * height))), (205, 205, 205), -1)
    cv2.rectangle(image, (x1, y1), (x2, y2), (120, 120, 120), max(1, width // 320))


def _draw_cart_bay(image: np.ndarray, width: int, height: int) -> None:
    bay = np.asarray(scene_zones(width, height)["cart"], np.int32)
    cv2.polylines(image, [bay], True, (30, 200, 230), max(2, width // 200), cv2.LINE_AA)
    x, y = _px(0.83, 0.95, width, height)
    cv2.putText(image, "CART", (x, y), cv2.FONT_HERSHEY_SIMPLEX, width / 900, (40, 170, 200),
                max(1, width // 400), cv2.LINE_AA)


# --------------------------------------------------------------------------- scene layout

def shelf_slots(width: int, height: int, rng: np.random.Generator) -> list[BagPose]:
    """Bag positions on the merchandiser's shelves: 3 shelves x 3 columns x 2 layers."""
    x1, x2 = _STORAGE[0] * width, _STORAGE[2] * width
    scale = depth_scale(_STORAGE[3] * height, height)
    slots = []
    for shelf, fy in enumerate(_SHELF_YS):
        for layer in range(2):
            for col in range(3):
                w, h = _bag_size(rng, width, height, scale)
                cx = x1 + (x2 - x1) * (col + 0.5) / 3 + rng.uniform(-0.02, 0.02) * width + layer * 0.03 * width
                bottom = fy * height - rng.uniform(0.0, 0.012) * height - layer * 0.5 * h
                slots.append(BagPose(cx, bottom, w, h, float(rng.uniform(-6, 6)), int(rng.integers(2**31)),
                                     (_STORAGE[3] * height, shelf, layer, col)))
    return slots


def cart_slots(cart: CartPose, width: int, height: int, rng: np.random.Generator) -> list[BagPose]:
    """Bag positions on the cart in loading order: back row, front row, then the next layer."""
    pw = _CART_SIZE[0] * width * cart.scale
    pd = _CART_SIZE[1] * height * cart.scale
    slots = []
    for layer in range(2):
        for row, offset in ((0, 0.6), (1, 0.05)):
            for col in range(2):
                w, h = _bag_size(rng, width, height, cart.scale)
                cx = cart.left + pw * (0.27 + 0.46 * col) + rng.uniform(-0.01, 0.01) * width
                bottom = cart.front - offset * pd - layer * 0.52 * h
                slots.append(BagPose(cx, bottom, w, h, float(rng.uniform(-7, 7)), int(rng.integers(2**31)),
                                     cart.depth + (row, layer, col)))
    return slots


def _bag_size(rng: np.random.Generator, width: int, height: int, scale: float) -> tuple[int, int]:
    k = scale * rng.uniform(0.88, 1.12)
    return max(6, int(_BAG_SIZE[0] * width * k)), max(4, int(_BAG_SIZE[1] * height * k * rng.uniform(0.9, 1.1)))


def move_cart_bag(bag: BagPose, old: CartPose, new: CartPose) -> BagPose:
    """The same bag after the cart moved from old to new (same scale)."""
    return BagPose(bag.cx + new.left - old.left, bag.bottom + new.front - old.front, bag.width, bag.height,
                   bag.angle, bag.style, new.depth + bag.depth[len(old.depth):])


def carried_bag(person: PersonPose, bag: BagPose, width: int, height: int) -> BagPose:
    """The bag held at waist height in front of the person."""
    scale = person.height / (_PERSON_HEIGHT * height)
    w, h = int(_BAG_SIZE[0] * width * scale), int(_BAG_SIZE[1] * height * scale)
    bottom = person.feet - 0.5 * person.height + 0.55 * h
    return BagPose(person.x, bottom, w, h, bag.angle * 0.5, bag.style, person.depth + (1,))


def random_point_in(polygon: Sequence[tuple[int, int]], rng: np.random.Generator) -> tuple[float, float]:
    contour = np.asarray(polygon, np.float32).reshape(-1, 1, 2)
    x0, y0 = contour.min(axis=(0, 1))
    x1, y1 = contour.max(axis=(0, 1))
    while True:
        p = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
        if cv2.pointPolygonTest(contour, p, False) > 0:
            return p


def random_person(rng: np.random.Generator, width: int, height: int, carrying: bool = False) -> PersonPose:
    while True:
        x = float(rng.uniform(-0.05, 1.05) * width)
        feet = float(rng.uniform(0.5, 1.02) * height)
        if x > 0.42 * width or feet > 0.77 * height:      # nobody stands inside the merchandiser
            break
    h = int(_PERSON_HEIGHT * height * depth_scale(feet, height) * rng.uniform(0.88, 1.1))
    return PersonPose(x, feet, h, float(rng.uniform(0, 2 * math.pi)), int(rng.integers(2**31)), carrying,
                      (feet, 0))


def random_scene(rng: np.random.Generator, width: int = 640, height: int = 480) -> list:
    """Random arrangement of bags, cart, people and boxes for one training frame."""
    zones = scene_zones(width, height)
    fill = rng.uniform(0.0, 0.9)
    items: list = [s for s in shelf_slots(width, height, rng) if rng.random() < fill]
    items = [s for s in items if s.depth[2] == 0 or _has_support(s, items)]
    if rng.random() < 0.85:
        left = rng.uniform(0.585, 0.74) * width
        front = rng.uniform(0.70, 0.93) * height
        scale = depth_scale(front, height) * rng.uniform(0.92, 1.08)
        cart = CartPose(left, front, scale, int(rng.integers(2**31)), (front, 0))
        items.append(cart)
        items += cart_slots(cart, width, height, rng)[: int(rng.integers(0, 9))]
    for _ in range(int(rng.choice(5, p=(0.35, 0.3, 0.2, 0.1, 0.05)))):
        cx, bottom = random_point_in(zones["floor"], rng)
        w, h = _bag_size(rng, width, height, depth_scale(bottom, height))
        angle = float(rng.uniform(-25, 25)) if rng.random() < 0.8 else float(rng.uniform(70, 110))
        items.append(BagPose(cx, bottom, w, h, angle, int(rng.integers(2**31)), (bottom, 0)))
    if rng.random() < 0.3:
        cx, bottom = random_point_in(zones["floor"], rng)
        size = int(0.09 * width * depth_scale(bottom, height) * rng.uniform(0.7, 1.3))
        items.append(BoxPose(cx, bottom, size, int(rng.integers(2**31)), (bottom, 0)))
    for _ in range(int(rng.choice(4, p=(0.3, 0.35, 0.25, 0.1)))):
        person = random_person(rng, width, height, carrying=rng.random() < 0.3)
        items.append(person)
        if person.carrying:
            items.append(carried_bag(person, BagPose(0, 0, 1, 1, float(rng.uniform(-8, 8)),
                                                     int(rng.integers(2**31)), ()), width, height))
    return items


def _has_support(slot: BagPose, items: list) -> bool:
    """An upper-layer shelf bag needs the bag below it."""
    return any(isinstance(o, BagPose) and o.depth[:2] == slot.depth[:2] and o.depth[2] == 0
               and o.depth[3] == slot.depth[3] for o in items)


# --------------------------------------------------------------------------- drawing

def _paste(canvas: np.ndarray, owner: np.ndarray, sprite: Sprite, left: int, top: int, oid: int) -> None:
    """Alpha-blend a sprite into the canvas at (left, top); mark its pixels as owned by oid."""
    h, w = sprite.alpha.shape
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + w, canvas.shape[1]), min(top + h, canvas.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    alpha = sprite.alpha[y0 - top:y1 - top, x0 - left:x1 - left]
    colour = sprite.image[y0 - top:y1 - top, x0 - left:x1 - left]
    region = canvas[y0:y1, x0:x1]
    region += alpha[..., None] * (colour - region)
    owner[y0:y1, x0:x1][alpha > 0] = oid


def _in_frame_box(sprite: Sprite, left: int, top: int, width: int, height: int):
    """Tight box of the part of the sprite's shape inside the frame, or None."""
    h, w = sprite.alpha.shape
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + w, width), min(top + h, height)
    if x0 >= x1 or y0 >= y1:
        return None
    inside = sprite.alpha[y0 - top:y1 - top, x0 - left:x1 - left] > 0
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        return None
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


def draw_bag(canvas: np.ndarray, pose: BagPose, owner: np.ndarray | None = None, oid: int = 1,
             sprites: dict | None = None):
    """Draw one bag into a float32 canvas; return (tight in-frame box or None, shape pixel count)."""
    key = (pose.style, pose.width, pose.height, round(pose.angle, 1))
    sprite = sprites.get(key) if sprites is not None else None
    if sprite is None:
        sprite = bag_sprite(pose.style, pose.width, pose.height, pose.angle)
        if sprites is not None:
            sprites[key] = sprite
    h, w = sprite.alpha.shape
    left = int(round(pose.cx - w / 2.0))
    top = int(round(pose.bottom - pose.height / 2.0 - h / 2.0))
    if owner is None:
        owner = np.zeros(canvas.shape[:2], np.int32)
    _paste(canvas, owner, sprite, left, top, oid)
    return _in_frame_box(sprite, left, top, canvas.shape[1], canvas.shape[0]), int((sprite.alpha > 0).sum())


def _draw_person(canvas, owner, pose: PersonPose, oid: int) -> None:
    sprite = person_sprite(pose.style, pose.height, pose.phase, pose.carrying)
    h, w = sprite.alpha.shape
    feet = int(round(pose.feet))
    shadow = np.zeros(canvas.shape[:2], np.float32)
    cv2.ellipse(shadow, (int(pose.x), feet), (int(w * 0.45), max(2, int(h * 0.03))), 0, 0, 360, 0.35, -1)
    canvas *= (1.0 - shadow)[..., None]
    _paste(canvas, owner, sprite, int(round(pose.x - w / 2.0)), feet - h, oid)


def _draw_cart(canvas, owner, pose: CartPose, oid: int, width: int, height: int) -> None:
    sprite, (ox, oy) = cart_sprite(pose.style, pose.scale, width, height)
    _paste(canvas, owner, sprite, int(round(pose.left)) - ox, int(round(pose.front)) - oy, oid)


def _draw_box(canvas, owner, pose: BoxPose, oid: int) -> None:
    sprite = box_sprite(pose.style, pose.size)
    h, w = sprite.alpha.shape
    _paste(canvas, owner, sprite, int(round(pose.cx - w / 2.0)), int(round(pose.bottom)) - h, oid)


def draw_scene(background: np.ndarray, items: Sequence, *, draw_bags: bool = True,
               sprites: dict | None = None) -> tuple[np.ndarray, list[Bag]]:
    """Paint items back to front over the background; return the float32 image and the labels."""
    height, width = background.shape[:2]
    canvas = background.copy()
    owner = np.zeros((height, width), np.int32)
    drawn = []
    for oid, item in enumerate(sorted(items, key=lambda o: o.depth), start=1):
        if isinstance(item, BagPose):
            target = canvas if draw_bags else np.zeros_like(canvas)   # occlusion as if drawn
            drawn.append((oid, *draw_bag(target, item, owner, oid, sprites)))
        elif isinstance(item, PersonPose):
            _draw_person(canvas, owner, item, oid)
        elif isinstance(item, CartPose):
            _draw_cart(canvas, owner, item, oid, width, height)
        elif isinstance(item, BoxPose):
            _draw_box(canvas, owner, item, oid)
    return canvas, _labels(drawn, owner, scene_zones(width, height))


def _labels(drawn, owner: np.ndarray, zones) -> list[Bag]:
    visible_px = np.bincount(owner.ravel(), minlength=max([oid for oid, _, _ in drawn], default=0) + 1)
    bags = []
    for oid, box, area in drawn:
        visible = float(visible_px[oid]) / max(area, 1)
        if box is None or visible < MIN_VISIBLE:
            continue
        x1, _, x2, y2 = box
        bags.append(Bag(box, zone_of(((x1 + x2) / 2.0, float(y2)), zones), round(visible, 4)))
    return bags


# --------------------------------------------------------------------------- camera effects

def lighting_gain(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth multiplicative light field (H, W, 3): brightness, gradient, vignette, colour cast."""
    yy, xx = np.mgrid[0:12, 0:16].astype(np.float32)
    u, v = xx / 15 - 0.5, yy / 11 - 0.5
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    field = rng.uniform(0.72, 1.12) * (1 + gx * u + gy * v - rng.uniform(0.1, 0.45) * (u * u + v * v))
    cast = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    small = (field[..., None] * cast).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def apply_camera(rng: np.random.Generator, image: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Light field, slight blur and sensor noise; returns uint8 BGR."""
    image = cv2.multiply(image, gain)
    image = cv2.GaussianBlur(image, (5, 5), float(rng.uniform(0.4, 1.1)))
    amplitude = float(rng.uniform(3.0, 9.0))
    noise = rng.random(image.shape[:2], dtype=np.float32) - 0.5    # uniform, std = amplitude / sqrt(12)
    image += (noise * amplitude)[..., None]
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def draw_overlay(image: np.ndarray, when: datetime, camera: str = "CAM-03 ICE STORE") -> None:
    """CCTV timestamp in the top-left corner (above every zone)."""
    height, width = image.shape[:2]
    text = f"{when:%Y-%m-%d %H:%M:%S}  {camera}"
    scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, max(6, int(0.022 * height)), 1)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = int(0.01 * width), int(0.012 * height)
    image[y:y + th + base + 4, x:x + tw + 6] //= 3
    cv2.putText(image, text, (x + 3, y + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)


# --------------------------------------------------------------------------- frames

def render_frame(rng: np.random.Generator, width: int = 640, height: int = 480, *, effects: bool = True,
                 draw_bags: bool = True) -> tuple[np.ndarray, list[Bag]]:
    """One random frame (BGR uint8) and its labelled bags.

    ``effects=False`` skips lighting, blur and noise so drawn pixels are exact;
    ``draw_bags=False`` renders the same frame (same random draws) without bags.
    """
    background = render_background(rng, width, height)
    items = random_scene(rng, width, height)
    gain = lighting_gain(rng, width, height)
    when = datetime(2024, 1, 1) + timedelta(seconds=int(rng.integers(365 * 86400)))
    image, bags = draw_scene(background, items, draw_bags=draw_bags)
    out = apply_camera(rng, image, gain) if effects else np.clip(image + 0.5, 0, 255).astype(np.uint8)
    draw_overlay(out, when)
    return out, bags


# --------------------------------------------------------------------------- clips

_WALK_SPEED = 0.022     # fraction of the frame width per story tick (0.1 s at 10 fps)


@dataclass(frozen=True)
class Trip:
    """One bag carried by the worker from a shelf slot to the cart, or dropped on the floor."""

    bag: BagPose
    pick: float               # tick the bag leaves the shelf
    release: float            # tick it lands on the cart or starts to fall
    cart_slot: int | None     # destination slot on the cart, None for a drop
    floor: tuple[float, float] | None   # landing point (cx, bottom) of a dropped bag


@dataclass(frozen=True)
class Walker:
    """A person following waypoints (tick, x, feet)."""

    style: int
    height_factor: float
    waypoints: tuple[tuple[float, float, float], ...]

    def where(self, tick: float) -> tuple[float, float, float] | None:
        """(x, feet, distance walked so far) at this tick; None outside the walk."""
        ticks = [w[0] for w in self.waypoints]
        if tick < ticks[0] or tick > ticks[-1]:
            return None
        xs = np.interp(tick, ticks, [w[1] for w in self.waypoints])
        ys = np.interp(tick, ticks, [w[2] for w in self.waypoints])
        steps = np.hypot(np.diff([w[1] for w in self.waypoints]), np.diff([w[2] for w in self.waypoints]))
        walked = np.interp(tick, ticks, np.concatenate([[0.0], np.cumsum(steps)]))
        return float(xs), float(ys), float(walked)


@dataclass(frozen=True)
class Story:
    shelf: tuple[BagPose, ...]
    cart_from: CartPose
    cart_to: CartPose
    cart_move: tuple[float, float]
    cart_slots: tuple[BagPose, ...]
    trips: tuple[Trip, ...]
    worker: Walker
    passers: tuple[Walker, ...]
    ticks: float


def make_story(rng: np.random.Generator, width: int = 640, height: int = 480) -> Story:
    """Plan a clip: the worker loads bags from the shelves onto the cart, drops one on the
    way, then pushes the cart along the bay while other people walk by."""
    shelf = [s for s in shelf_slots(width, height, rng) if rng.random() < 0.8]
    shelf = [s for s in shelf if s.depth[2] == 0 or _has_support(s, shelf)]
    front = rng.uniform(0.80, 0.86) * height
    cart_from = CartPose(rng.uniform(0.62, 0.66) * width, front, depth_scale(front, height),
                         int(rng.integers(2**31)), (front, 0))
    dx, dy = rng.uniform(0.03, 0.07) * width, rng.uniform(0.02, 0.05) * height
    cart_to = CartPose(cart_from.left + dx, cart_from.front + dy, cart_from.scale, cart_from.style,
                       (cart_from.front + dy, 0))
    slots = cart_slots(cart_from, width, height, rng)
    n_trips = min(int(rng.integers(3, 6)), len(shelf))
    drop_trip = int(rng.integers(n_trips)) if n_trips else -1
    picks = sorted(shelf, key=lambda s: (-s.depth[2], -s.depth[1]))[:n_trips]   # top layers first
    home = (cart_from.left - 0.07 * width, cart_from.front + 0.02 * height)
    tick, waypoints, trips, placed = 3.0, [(0.0, *home), (3.0, *home)], [], 0
    for k, bag in enumerate(picks):
        at_shelf = (float(np.clip(bag.cx, 0.08 * width, 0.34 * width)), rng.uniform(0.79, 0.83) * height)
        tick = _walk_to(waypoints, tick, at_shelf, width) + 3.0
        waypoints.append((tick, *at_shelf))
        pick = tick
        if k == drop_trip:
            landing = (rng.uniform(0.32, 0.48) * width, rng.uniform(0.84, 0.92) * height)
            tick = _walk_to(waypoints, tick, (landing[0] - 0.02 * width, landing[1] - 0.02 * height), width)
            trips.append(Trip(bag, pick, tick, None, landing))
            tick = _walk_to(waypoints, tick, home, width) + 3.0
        else:
            tick = _walk_to(waypoints, tick, home, width)
            trips.append(Trip(bag, pick, tick, placed, None))
            placed += 1
            tick += 3.0
        waypoints.append((tick, *home))
    pw = _CART_SIZE[0] * width * cart_from.scale
    behind = (cart_from.left + 0.5 * pw, cart_from.front - _CART_SIZE[1] * height * cart_from.scale - 0.01 * height)
    tick = _walk_to(waypoints, tick, behind, width) + 2.0
    waypoints.append((tick, *behind))
    cart_move = (tick, tick + 12.0)
    waypoints.append((cart_move[1], behind[0] + dx, behind[1] + dy))
    ticks = cart_move[1] + 5.0
    waypoints.append((ticks, behind[0] + dx, behind[1] + dy))
    worker = Walker(int(rng.integers(2**31)), 1.0, tuple(waypoints))
    passers = tuple(_passer(rng, ticks, width, height) for _ in range(int(rng.integers(1, 3))))
    return Story(tuple(shelf), cart_from, cart_to, cart_move, tuple(slots), tuple(trips), worker, passers, ticks)


def _walk_to(waypoints: list, tick: float, target: tuple[float, float], width: int) -> float:
    """Append a walk from the last waypoint to target; return the arrival tick."""
    _, x, y = waypoints[-1]
    arrival = tick + max(1.0, math.hypot(target[0] - x, target[1] - y) / (_WALK_SPEED * width))
    waypoints.append((tick, x, y))
    waypoints.append((arrival, *target))
    return arrival


def _passer(rng: np.random.Generator, ticks: float, width: int, height: int) -> Walker:
    """Someone crossing the frame in the foreground or along the back wall."""
    feet = (rng.uniform(0.92, 1.0) if rng.random() < 0.6 else rng.uniform(0.5, 0.56)) * height
    start = rng.uniform(0.0, 0.6) * ticks
    x0, x1 = -0.08 * width, 1.08 * width
    if rng.random() < 0.5:
        x0, x1 = x1, x0
    duration = abs(x1 - x0) / (_WALK_SPEED * width * rng.uniform(0.8, 1.2))
    return Walker(int(rng.integers(2**31)), float(rng.uniform(0.9, 1.08)), ((start, x0, feet), (start + duration, x1, feet)))


def _person_at(walker: Walker, tick: float, width: int, height: int, carrying: bool) -> PersonPose | None:
    where = walker.where(tick)
    if where is None:
        return None
    x, feet, walked = where
    h = int(_PERSON_HEIGHT * height * depth_scale(feet, height) * walker.height_factor)
    phase = walked / (0.3 * h) * math.pi
    return PersonPose(x, feet, h, phase, walker.style, carrying, (feet, 0))


def _cart_at(story: Story, tick: float) -> CartPose:
    t0, t1 = story.cart_move
    f = float(np.clip((tick - t0) / (t1 - t0), 0.0, 1.0))
    a, b = story.cart_from, story.cart_to
    front = a.front + f * (b.front - a.front)
    return CartPose(a.left + f * (b.left - a.left), front, a.scale, a.style, (front, 0))


def story_items(story: Story, tick: float, width: int, height: int) -> list:
    """Everything on stage at this tick, as drawable poses."""
    cart = _cart_at(story, tick)
    picked = {t.bag for t in story.trips if tick >= t.pick}
    items: list = [s for s in story.shelf if s not in picked] + [cart]
    carrying = any(t.pick <= tick < t.release for t in story.trips)
    worker = _person_at(story.worker, tick, width, height, carrying)
    if worker is not None:
        items.append(worker)
    for trip in story.trips:
        if trip.pick <= tick < trip.release and worker is not None:
            items.append(carried_bag(worker, trip.bag, width, height))
        elif tick >= trip.release and trip.cart_slot is not None:
            items.append(move_cart_bag(story.cart_slots[trip.cart_slot], story.cart_from, cart))
        elif tick >= trip.release:
            items.append(_dropped_bag(story, trip, tick, width, height))
    for passer in story.passers:
        person = _person_at(passer, tick, width, height, False)
        if person is not None:
            items.append(person)
    return items


def _dropped_bag(story: Story, trip: Trip, tick: float, width: int, height: int) -> BagPose:
    """A dropped bag falls for 3 ticks from the worker's hands to its landing point."""
    cx, bottom = trip.floor
    scale = depth_scale(bottom, height)
    w, h = int(_BAG_SIZE[0] * width * scale), int(_BAG_SIZE[1] * height * scale)
    f = float(np.clip((tick - trip.release) / 3.0, 0.0, 1.0))
    start = bottom - 0.25 * height
    angle = trip.bag.angle + f * 24.0
    return BagPose(cx, start + f * f * (bottom - start), w, h, angle, trip.bag.style, (bottom, 0))


def render_clip(seed: int, n_frames: int = 150, width: int = 640, height: int = 480, *,
                fps: float = 10.0, effects: bool = True) -> Iterator[tuple[np.ndarray, list[Bag]]]:
    """Frames of one story (see make_story) with their labelled bags; seeded and reproducible."""
    rng = np.random.default_rng([seed, 2])
    background = render_background(rng, width, height)
    story = make_story(rng, width, height)
    gain = lighting_gain(rng, width, height)
    start = datetime(2024, 1, 1) + timedelta(seconds=int(rng.integers(365 * 86400)))
    sprites: dict = {}
    for i in range(n_frames):
        tick = i * story.ticks / max(n_frames - 1, 1)
        image, bags = draw_scene(background, story_items(story, tick, width, height), sprites=sprites)
        frame_rng = np.random.default_rng([seed, 3, i])
        flicker = gain * np.float32(1.0 + 0.01 * frame_rng.standard_normal())
        out = apply_camera(frame_rng, image, flicker) if effects else np.clip(image + 0.5, 0, 255).astype(np.uint8)
        draw_overlay(out, start + timedelta(seconds=i / fps))
        yield out, bags


# --------------------------------------------------------------------------- files

def yolo_label_lines(bags: Sequence[Bag], width: int, height: int) -> list[str]:
    """YOLO label lines: class x_centre y_centre width height, normalised to the frame."""
    lines = []
    for bag in bags:
        x1, y1, x2, y2 = bag.box
        lines.append(f"0 {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                     f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return lines


def write_dataset(out_dir: str | Path, n_train: int = 1200, n_val: int = 200, seed: int = 0, imgsz: int = 640,
                  width: int = 640, height: int = 480) -> Path:
    """Write an Ultralytics YOLO dataset of random frames; return the path of its data.yaml.

    Frames are rendered at width x height and saved (JPEG) resized so the long side is
    imgsz; labels are normalised, so they hold for any size.
    """
    out = Path(out_dir)
    size = (imgsz, int(round(imgsz * height / width)))
    for stream, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, bags = render_frame(np.random.default_rng([seed, stream, i]), width, height)
            if size != (width, height):
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            stem = f"ice_{seed}_{split}_{i:05d}"
            cv2.imwrite(str(out / "images" / split / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            text = "\n".join(yolo_label_lines(bags, width, height))
            (out / "labels" / split / f"{stem}.txt").write_text(text + "\n" if text else "")
    yaml_path = out / "data.yaml"
    yaml_path.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\n"
                         f"names:\n  0: {CLASS_NAME}\n")
    return yaml_path


def write_clip(path: str | Path, seed: int = 0, n_frames: int = 150, fps: float = 10.0,
               width: int = 640, height: int = 480) -> Path:
    """Write a clip (.mp4 with mp4v, .avi with MJPG) and, beside it, a JSON of the
    per-frame ground truth: counts per zone and the labelled boxes. Returns the JSON path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot open a video writer for {path}")
    frames = []
    try:
        for i, (image, bags) in enumerate(render_clip(seed, n_frames, width, height, fps=fps)):
            writer.write(image)
            frames.append({"frame": i, "counts": count_by_zone(bags),
                           "bags": [{"box": list(b.box), "zone": b.zone, "visible": b.visible} for b in bags]})
    finally:
        writer.release()
    truth = {"video": path.name, "seed": seed, "fps": fps, "width": width, "height": height,
             "anchor": "bottom_center", "zones": {k: [list(p) for p in v] for k, v in scene_zones(width, height).items()},
             "frames": frames}
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(truth, indent=1))
    return json_path
