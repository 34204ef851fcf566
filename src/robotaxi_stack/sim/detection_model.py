"""Simulated object detector (pure: numpy only): ground truth -> noisy detections.

Stands in for the LiDAR/camera perception (ONNX) when evaluating the tracker. Per frame, from an
ActorSnapshot and the ego pose, like a real 3D detector:
- only actors within `range_m` of the ego are seen (no occlusion model);
- an actor is missed with a probability rising from `miss_prob_near` at the ego to
  `miss_prob_far` at `range_m` (quadratically in range);
- box centre noise (sigma growing linearly with range from `position_sigma_near_m` to
  `position_sigma_far_m`), yaw noise (per class group), a front/back yaw flip with
  `yaw_flip_prob`, relative size noise;
- the label comes from a confusion matrix (rows: true label, columns: detected label), the
  reported class probability is higher for correct labels than for confused ones;
- false positives: Poisson(`false_positives_per_frame`) per frame, uniformly in the range disc
  and, when an `on_road` test is given, on the road (a ghost of a car or a pedestrian);
- the reported covariance is the noise model itself (a calibrated detector).
Everything draws from the numpy Generator passed in, so a seed reproduces a run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from robotaxi_stack.sim.actors import ActorSnapshot, ObjectLabel

NUM_LABELS = 7
L = ObjectLabel


def _default_confusion() -> np.ndarray:
    """Row = true label, column = detected label; rows sum to 1."""
    c = np.zeros((NUM_LABELS, NUM_LABELS))
    c[L.UNKNOWN, [L.UNKNOWN, L.CAR, L.PEDESTRIAN]] = (0.9, 0.07, 0.03)
    c[L.CAR, [L.CAR, L.TRUCK, L.BUS, L.UNKNOWN]] = (0.95, 0.03, 0.01, 0.01)
    c[L.TRUCK, [L.TRUCK, L.CAR, L.BUS]] = (0.85, 0.1, 0.05)
    c[L.BUS, [L.BUS, L.TRUCK]] = (0.9, 0.1)
    c[L.BICYCLE, [L.BICYCLE, L.MOTORCYCLE, L.PEDESTRIAN]] = (0.9, 0.05, 0.05)
    c[L.MOTORCYCLE, [L.MOTORCYCLE, L.BICYCLE, L.CAR]] = (0.9, 0.07, 0.03)
    c[L.PEDESTRIAN, [L.PEDESTRIAN, L.BICYCLE, L.UNKNOWN]] = (0.95, 0.03, 0.02)
    return c


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Noise model of the simulated detector (1-sigma values, probabilities per frame)."""

    range_m: float = 80.0
    position_sigma_near_m: float = 0.15
    position_sigma_far_m: float = 0.3
    vehicle_yaw_sigma_rad: float = 0.05
    pedestrian_yaw_sigma_rad: float = 0.4
    yaw_flip_prob: float = 0.03
    size_sigma_rel: float = 0.05
    miss_prob_near: float = 0.07
    miss_prob_far: float = 0.3
    false_positives_per_frame: float = 0.5
    correct_class_prob: tuple[float, float] = (0.6, 0.95)
    confused_class_prob: tuple[float, float] = (0.35, 0.7)
    confusion: np.ndarray = dataclasses.field(default_factory=_default_confusion)

    def __post_init__(self) -> None:
        for name in ('range_m', 'position_sigma_near_m', 'position_sigma_far_m',
                     'vehicle_yaw_sigma_rad', 'pedestrian_yaw_sigma_rad', 'size_sigma_rel',
                     'false_positives_per_frame'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f'DetectorConfig.{name} = {value!r} must be finite and >= 0')
        if not self.range_m > 0.0:
            raise ValueError(f'DetectorConfig.range_m = {self.range_m} must be > 0')
        for name in ('yaw_flip_prob', 'miss_prob_near', 'miss_prob_far'):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'DetectorConfig.{name} = {value!r} must be in [0, 1]')
        confusion = np.asarray(self.confusion, dtype=np.float64)
        if confusion.shape != (NUM_LABELS, NUM_LABELS) or np.any(confusion < 0.0) \
                or not np.allclose(confusion.sum(axis=1), 1.0):
            raise ValueError('DetectorConfig.confusion must be 7x7, non-negative, rows '
                             'summing to 1')
        object.__setattr__(self, 'confusion', confusion)


@dataclasses.dataclass(frozen=True, eq=False)
class SimDetections:
    """Detections of one frame in the map frame (N objects).

    labels (N,) uint8 ObjectClass labels, class_prob (N,) probability of that label, x_m, y_m,
    z_m, yaw_rad (N,), length_m, width_m, height_m (N,), covariance (N, 3, 3) over (x, y, yaw),
    actor_index (N,) index of the detected actor in the snapshot (-1: false positive).
    """

    labels: np.ndarray
    class_prob: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    z_m: np.ndarray
    yaw_rad: np.ndarray
    length_m: np.ndarray
    width_m: np.ndarray
    height_m: np.ndarray
    covariance: np.ndarray
    actor_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


# Typical [length, width, height] of false-positive ghosts: car-sized and pedestrian-sized.
_GHOST_LABELS = np.array([L.CAR, L.PEDESTRIAN, L.UNKNOWN])
_GHOST_SIZES_M = np.array([[4.5, 1.9, 1.5], [0.6, 0.6, 1.7], [1.0, 1.0, 0.8]])


def detect(snapshot: ActorSnapshot, ego_pose: Any, config: DetectorConfig,
           rng: np.random.Generator,
           on_road: Callable[[np.ndarray], np.ndarray] | None = None) -> SimDetections:
    """One detector frame. ego_pose: (x_m, y_m, yaw_rad) of base_link in map (only its
    position matters: the detector sees all around). on_road: (K, 2) -> (K,) bool, where false
    positives may appear (None: anywhere in range)."""
    ego_xy = np.asarray(ego_pose, dtype=np.float64).reshape(-1)[:2]
    boxes = np.asarray(snapshot.boxes, dtype=np.float64).reshape(-1, 7)
    labels_true = np.asarray(snapshot.labels, dtype=np.int64).reshape(-1)
    rel = boxes[:, :2] - ego_xy
    range_m = np.hypot(rel[:, 0], rel[:, 1])
    frac = np.clip(range_m / config.range_m, 0.0, 1.0)
    miss_prob = config.miss_prob_near + (config.miss_prob_far - config.miss_prob_near) * frac ** 2
    seen = (range_m <= config.range_m) & (rng.random(len(boxes)) >= miss_prob)
    index = np.flatnonzero(seen)
    n = len(index)
    b, frac = boxes[index], frac[index]
    sigma_xy = config.position_sigma_near_m + (config.position_sigma_far_m
                                               - config.position_sigma_near_m) * frac
    xy = b[:, :2] + rng.normal(size=(n, 2)) * sigma_xy[:, None]
    true_labels = labels_true[index]
    is_ped = true_labels == L.PEDESTRIAN
    yaw_sigma = np.where(is_ped, config.pedestrian_yaw_sigma_rad, config.vehicle_yaw_sigma_rad)
    yaw = b[:, 3] + rng.normal(size=n) * yaw_sigma
    yaw = np.where(rng.random(n) < config.yaw_flip_prob, yaw + np.pi, yaw)
    dims = b[:, 4:7] * np.maximum(1.0 + rng.normal(size=(n, 3)) * config.size_sigma_rel, 0.3)
    # Inverse-CDF sampling of each detection's label from its confusion row.
    cdf = np.cumsum(config.confusion[true_labels], axis=1)
    labels = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), NUM_LABELS - 1)
    correct = labels == true_labels
    prob = np.where(correct, rng.uniform(*config.correct_class_prob, size=n),
                    rng.uniform(*config.confused_class_prob, size=n))
    cov = np.zeros((n, 3, 3))
    cov[:, 0, 0] = cov[:, 1, 1] = sigma_xy ** 2
    cov[:, 2, 2] = yaw_sigma ** 2
    detections = [(labels, prob, xy, b[:, 2], yaw, dims, cov, index)]
    num_ghosts = int(rng.poisson(config.false_positives_per_frame))
    if num_ghosts:
        detections.append(_ghosts(num_ghosts, ego_xy, config, rng, on_road))
    parts = list(zip(*detections))
    labels, prob, xy, z, yaw, dims, cov, actor = (np.concatenate(p) for p in parts)
    yaw = (yaw + np.pi) % (2.0 * np.pi) - np.pi
    return SimDetections(labels.astype(np.uint8), prob, xy[:, 0], xy[:, 1], z, yaw,
                         dims[:, 0], dims[:, 1], dims[:, 2], cov, actor.astype(np.int64))


def _ghosts(count: int, ego_xy: np.ndarray, config: DetectorConfig, rng: np.random.Generator,
            on_road: Callable[[np.ndarray], np.ndarray] | None) -> tuple:
    """`count` false positives in the range disc (on the road where a test is given); fewer
    when the road covers too little of the disc to find places in a few draws."""
    tries = max(16 * count, 64)
    radius = config.range_m * np.sqrt(rng.random(tries))
    angle = rng.uniform(-np.pi, np.pi, tries)
    xy = ego_xy + np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    if on_road is not None:
        xy = xy[np.asarray(on_road(xy), dtype=bool)]
    xy = xy[:count]
    n = len(xy)
    kind = rng.integers(0, len(_GHOST_LABELS), n)
    frac = np.hypot(*(xy - ego_xy).T) / config.range_m if n else np.zeros(0)
    sigma_xy = config.position_sigma_near_m + (config.position_sigma_far_m
                                               - config.position_sigma_near_m) * frac
    dims = _GHOST_SIZES_M[kind] * np.maximum(1.0 + rng.normal(size=(n, 3))
                                             * config.size_sigma_rel, 0.3)
    cov = np.zeros((n, 3, 3))
    cov[:, 0, 0] = cov[:, 1, 1] = sigma_xy ** 2
    cov[:, 2, 2] = config.vehicle_yaw_sigma_rad ** 2
    return (_GHOST_LABELS[kind], rng.uniform(*config.confused_class_prob, size=n), xy,
            0.5 * dims[:, 2], rng.uniform(-np.pi, np.pi, n), dims, cov,
            np.full(n, -1, np.int64))
