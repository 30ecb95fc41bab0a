"""ShapeWorld's objects, scenes and renderer: flat shapes on a dark background, drawn with numpy.

Choices:
1. Attributes: 3 shapes (circle, square, triangle), 7 palette colours chosen far apart along their
   lines from the background colour (so a blurred edge, a mix of colour and background, still points
   at its colour), 3 fills (solid, striped, hollow), 2 sizes (16 and 24 px on a 64 px canvas).
   "hollow" is an outline; "striped" is an outline with horizontal bars inside, so a striped object
   is one connected blob. No diamond: it would share "four corners" with the square and make the
   reasoning riddles ambiguous.
2. Rendering is exact, with no anti-aliasing and no randomness: a scene fully determines its pixels.
   Randomness lives in the samplers (``grammar.py``), which take a ``numpy.random.Generator``.
3. Stripes are 4 px bars with 4 px gaps, placed relative to the object with a bar across its middle:
   a striped object of a given shape and size always looks the same, and even a small triangle
   keeps a bar inside its outline (canvas-anchored stripes left some small triangles barless).
4. Objects never overlap and keep a gap of at least ``min_gap`` px between bounding boxes, so the
   evaluator can separate them by connected components.
5. Geometry shared with the evaluator (relations, the 3 x 3 regions of plans) lives here, so the
   ground truth and the detector apply the same definitions.

Coordinates: x to the right, y downwards, pixel (x, y) covers [x, x+1) x [y, y+1); an object's
centre is the centre of its bounding box, in these continuous coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SHAPE_PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles"}
# RGB. Pairwise far apart, and far apart as mixes with the background (alpha ~ 0.5), which is what
# a blurred edge or a VQ reconstruction produces.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 100, 240),
    "yellow": (240, 225, 40),
    "purple": (165, 60, 215),
    "orange": (255, 110, 30),
    "white": (240, 240, 240),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
TEXTURES: tuple[str, ...] = ("solid", "striped", "hollow")
SIZES: tuple[str, ...] = ("small", "large")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
# 3 x 3 regions of the canvas, row-major; plans place single objects in them.
REGIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip


@dataclass(frozen=True)
class WorldConfig:
    """Pixel geometry of the world. The defaults are the only tested setting."""

    image_size: int = 64
    """Side of the square canvas in px."""
    size_px: dict[str, int] = field(default_factory=lambda: {"small": 16, "large": 24})
    """Bounding-box side of each size class in px."""
    outline_px: int = 2
    """Width of the outline of hollow and striped objects."""
    stripe_period: int = 8
    """Rows per stripe period (half coloured, half background), anchored to the canvas."""
    min_gap: int = 4
    """Least gap between the bounding boxes of two objects, in px (along x or along y)."""
    border: int = 1
    """Least distance between an object's bounding box and the canvas edge."""
    background: tuple[int, int, int] = (40, 40, 40)

    def __post_init__(self) -> None:
        if set(self.size_px) != set(SIZES):
            raise ValueError(f"WorldConfig.size_px must have keys {SIZES}, got {sorted(self.size_px)}")
        if self.stripe_period % 2 or self.stripe_period < 4:
            raise ValueError(f"WorldConfig.stripe_period must be even and >= 4, got {self.stripe_period}")
        biggest = max(self.size_px.values())
        if biggest + 2 * self.border > self.image_size:
            raise ValueError(f"WorldConfig: a {biggest} px object does not fit a {self.image_size} px canvas")


DEFAULT_WORLD = WorldConfig()


@dataclass(frozen=True)
class SceneObject:
    """One object on the canvas; (x0, y0) is the top-left pixel of its bounding box."""

    shape: str
    color: str
    texture: str
    size: str
    x0: int
    y0: int

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, COLORS),
            ("texture", self.texture, TEXTURES),
            ("size", self.size, SIZES),
        ):
            if value not in allowed:
                raise ValueError(f"SceneObject.{name} must be one of {allowed}, got {value!r}")

    def side(self, world: WorldConfig = DEFAULT_WORLD) -> int:
        return world.size_px[self.size]

    def centre(self, world: WorldConfig = DEFAULT_WORLD) -> tuple[float, float]:
        s = self.side(world)
        return (self.x0 + s / 2, self.y0 + s / 2)

    def box(self, world: WorldConfig = DEFAULT_WORLD) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) with x1, y1 exclusive."""
        s = self.side(world)
        return (self.x0, self.y0, self.x0 + s, self.y0 + s)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]

    def to_dict(self) -> dict:
        return {"objects": [vars(o).copy() for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(tuple(SceneObject(**o) for o in data["objects"]))


# ---------------------------------------------------------------------------------------------
# Geometry shared by the ground truth and the evaluator


def boxes_apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    """True when the boxes are separated by at least ``gap`` px along x or along y."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], slack: float = 0.0) -> bool:
    """Whether centre ``a`` is ``relation`` centre ``b`` ("a left of b").

    The offset along the relation's axis must be positive and dominate the other axis by ``slack``
    px, as in T2I-CompBench's spatial score; so "left of" and "above" exclude each other.
    """
    dx, dy = b[0] - a[0], b[1] - a[1]
    if relation == "left of":
        along, across = dx, dy
    elif relation == "right of":
        along, across = -dx, dy
    elif relation == "above":
        along, across = dy, dx
    elif relation == "below":
        along, across = -dy, dx
    else:
        raise ValueError(f"unknown relation {relation!r}; known: {RELATIONS}")
    return along > 0 and along > abs(across) + slack


def region_cell(centre: tuple[float, float], world: WorldConfig = DEFAULT_WORLD) -> tuple[int, int]:
    """(row, col) of the 3 x 3 cell holding ``centre``."""
    cell = world.image_size / 3
    col = min(int(centre[0] // cell), 2)
    row = min(int(centre[1] // cell), 2)
    return row, col


def region_of(centre: tuple[float, float], world: WorldConfig = DEFAULT_WORLD) -> str:
    row, col = region_cell(centre, world)
    return REGIONS[3 * row + col]


def region_relation_holds(relation: str, region_a: str, region_b: str) -> bool:
    """``relation_holds`` applied to the cells' indices: what a plan's regions promise."""
    ia, ib = REGIONS.index(region_a), REGIONS.index(region_b)
    # (col, row) plays (x, y).
    return relation_holds(relation, (ia % 3, ia // 3), (ib % 3, ib // 3))


# ---------------------------------------------------------------------------------------------
# Rendering


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2r+1)^2 square (separably); outside the array counts as background."""
    out = np.array(mask, dtype=bool)
    for _ in range(radius):
        row = out.copy()
        row[:, 1:] &= out[:, :-1]
        row[:, :-1] &= out[:, 1:]
        row[:, [0, -1]] = False
        col = row.copy()
        col[1:] &= row[:-1]
        col[:-1] &= row[1:]
        col[[0, -1], :] = False
        out = col
    return out


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Filled ``shape`` in a side x side box, [side, side] bool; the shape touches all four edges."""
    c = (np.arange(side) + 0.5)[None, :]  # [1, S] pixel-centre x
    r = (np.arange(side) + 0.5)[:, None]  # [S, 1] pixel-centre y
    half = side / 2
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "circle":
        return (c - half) ** 2 + (r - half) ** 2 <= half**2
    if shape == "triangle":
        # Apex up; row y spans half-width (y + 1) / 2, so the top row has 2 px and the bottom row all.
        half_width = (np.arange(side)[:, None] + 1) * half / side  # [S, 1]
        return np.abs(c - half) <= half_width
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def object_mask(obj: SceneObject, world: WorldConfig = DEFAULT_WORLD) -> np.ndarray:
    """Painted pixels of ``obj`` inside its bounding box, [S, S] bool."""
    side = obj.side(world)
    filled = shape_mask(obj.shape, side)
    if obj.texture == "solid":
        return filled
    outline = filled & ~erode(filled, world.outline_px)
    if obj.texture == "hollow":
        return outline
    half = world.stripe_period // 2
    # A bar straddles the centre row of the interior (lower than the middle in a triangle), so every
    # striped object of a shape and size looks the same and even a small triangle shows a bar.
    inside = filled & ~outline
    centre_row = int(round(float(np.nonzero(inside)[0].mean()))) if inside.any() else side // 2
    rows = np.arange(side)[:, None] - (centre_row - half // 2)  # [S, 1]
    bars = (rows // half) % 2 == 0
    return outline | (filled & bars)


def render(scene: Scene, world: WorldConfig = DEFAULT_WORLD) -> np.ndarray:
    """The scene's pixels, [H, W, 3] uint8. Raises if an object leaves the canvas."""
    n = world.image_size
    img = np.empty((n, n, 3), dtype=np.uint8)
    img[:] = world.background
    for i, obj in enumerate(scene.objects):
        x0, y0, x1, y1 = obj.box(world)
        if x0 < 0 or y0 < 0 or x1 > n or y1 > n:
            raise ValueError(f"scene object {i} ({obj}) leaves the {n} px canvas")
        img[y0:y1, x0:x1][object_mask(obj, world)] = PALETTE[obj.color]
    return img


def render_image(scene: Scene, world: WorldConfig = DEFAULT_WORLD) -> Image.Image:
    return Image.fromarray(render(scene, world), mode="RGB")


# ---------------------------------------------------------------------------------------------
# Layout sampling


class LayoutError(RuntimeError):
    """No layout satisfying the constraints was found within the allowed tries."""


def _axis_range(cell_index: int | None, side: int, world: WorldConfig) -> tuple[int, int]:
    """Inclusive range of the box's first pixel so that it fits the canvas (and its centre the cell)."""
    lo, hi = world.border, world.image_size - world.border - side
    if cell_index is not None:
        cell = world.image_size / 3
        # centre = first + side/2 must lie in [cell_index * cell, (cell_index + 1) * cell)
        lo = max(lo, int(np.ceil(cell_index * cell - side / 2)))
        hi = min(hi, int(np.ceil((cell_index + 1) * cell - side / 2)) - 1)
    if lo > hi:
        raise LayoutError(f"a {side} px object does not fit cell {cell_index}")
    return lo, hi


def place_objects(
    sides: list[int],
    rng: np.random.Generator,
    world: WorldConfig = DEFAULT_WORLD,
    regions: list[str | None] | None = None,
    relations: list[tuple[int, int, str]] = (),
    slack: float = 4.0,
    tries: int = 400,
) -> list[tuple[int, int]]:
    """Top-left corners for boxes of the given sides: inside the canvas, ``min_gap`` apart, each
    centre inside its region (when given), and each relation ``(i, j, rel)`` holding both between
    the centres (with ``slack`` px to spare, so mild blur cannot flip it) and between the regions
    the centres fall in (so a plan's regions state it). Rejection sampling; raises ``LayoutError``.
    """
    n = len(sides)
    regions = list(regions) if regions is not None else [None] * n
    if len(regions) != n:
        raise ValueError(f"place_objects: {len(regions)} regions for {n} objects")
    ranges = []
    for side, region in zip(sides, regions):
        row = col = None
        if region is not None:
            if region not in REGIONS:
                raise ValueError(f"unknown region {region!r}; known: {REGIONS}")
            row, col = divmod(REGIONS.index(region), 3)
        ranges.append((_axis_range(col, side, world), _axis_range(row, side, world)))
    # Big boxes first: they are the hard ones to fit.
    order = sorted(range(n), key=lambda i: -sides[i])
    for _ in range(tries):
        corners: list[tuple[int, int] | None] = [None] * n
        boxes: list[tuple[int, int, int, int]] = []
        ok = True
        for i in order:
            (xlo, xhi), (ylo, yhi) = ranges[i]
            for _ in range(30):
                x0 = int(rng.integers(xlo, xhi + 1))
                y0 = int(rng.integers(ylo, yhi + 1))
                box = (x0, y0, x0 + sides[i], y0 + sides[i])
                if all(boxes_apart(box, other, world.min_gap) for other in boxes):
                    break
            else:
                ok = False
                break
            corners[i] = (x0, y0)
            boxes.append(box)
        if not ok:
            continue
        centres = [(x + s / 2, y + s / 2) for (x, y), s in zip(corners, sides)]
        if all(
            relation_holds(rel, centres[i], centres[j], slack)
            and region_relation_holds(rel, region_of(centres[i], world), region_of(centres[j], world))
            for i, j, rel in relations
        ):
            return corners  # type: ignore[return-value]
    raise LayoutError(f"no layout for sides {sides}, regions {regions}, relations {list(relations)} in {tries} tries")


def random_scene(
    rng: np.random.Generator, n_objects: int | None = None, world: WorldConfig = DEFAULT_WORLD
) -> Scene:
    """A scene of 1-5 objects with uniformly random attributes (for tokenizer training and tests)."""
    if n_objects is None:
        n_objects = int(rng.integers(1, 6))
    p_large = 0.5 if n_objects <= 3 else 0.25  # crowded scenes need mostly small objects to fit
    for _ in range(50):
        attrs = [
            (
                SHAPES[rng.integers(len(SHAPES))],
                COLORS[rng.integers(len(COLORS))],
                TEXTURES[rng.integers(len(TEXTURES))],
                "large" if rng.random() < p_large else "small",
            )
            for _ in range(n_objects)
        ]
        try:
            corners = place_objects([world.size_px[a[3]] for a in attrs], rng, world, tries=40)
        except LayoutError:
            continue  # too many large objects for the canvas: draw the sizes again
        return Scene(tuple(SceneObject(*a, x0=x, y0=y) for a, (x, y) in zip(attrs, corners)))
    raise LayoutError(f"could not place {n_objects} random objects")
