"""summary.png of a scenario run (ARCHITECTURE.md section 6): map, paths and objects on top,
speed / acceleration / jerk over time below.

Drawn with matplotlib's Agg canvas directly (no pyplot): no display, no global figure state, safe
to call from any thread; map polylines go through one LineCollection so large maps stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure


class SummaryError(ValueError):
    """Inconsistent plot inputs; the message names the argument."""


def _series(name: str, value: Any, length: int) -> np.ndarray:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size != length:
        raise SummaryError(f'{name}: expected {length} samples like times_s, got {arr.size}')
    return arr


def draw_summary(path_png: str | os.PathLike,
                 map_polylines: Sequence[Any],
                 ego_xy: Any,
                 actor_tracks: Mapping[str, Any],
                 times_s: Any,
                 speed_mps: Any,
                 accel_mps2: Any,
                 jerk_mps3: Any,
                 events: Sequence[tuple[float, str]] = (),
                 title: str = '',
                 stops_xy: Mapping[str, Any] | None = None) -> str:
    """Write the summary figure and return its path.

    map_polylines: sequence of (N_i, 2) map-frame polylines (lane boundaries, stop lines).
    ego_xy: (T, 2) base_link positions at times_s (T,) seconds; speed_mps, accel_mps2,
    jerk_mps3: (T,) at the same times. actor_tracks: actor id -> (N, 2) box-centre positions
    (only where the actor exists). events: (t_s, label) pairs (collisions, MRM, faults, ride
    states), drawn as vertical lines and as markers on the ego path. stops_xy: label ->
    (2,) requested stop positions (pickup/dropoff), drawn as crosses.
    """
    t = np.asarray(times_s, dtype=float).reshape(-1)
    ego = np.asarray(ego_xy, dtype=float)
    if ego.shape != (t.size, 2):
        raise SummaryError(f'ego_xy: expected shape ({t.size}, 2), got {ego.shape}')
    speed = _series('speed_mps', speed_mps, t.size)
    accel = _series('accel_mps2', accel_mps2, t.size)
    jerk = _series('jerk_mps3', jerk_mps3, t.size)
    lines = []
    for i, line in enumerate(map_polylines):
        arr = np.asarray(line, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise SummaryError(f'map_polylines[{i}]: expected shape (N, 2), got {arr.shape}')
        lines.append(arr)
    tracks = {}
    for actor_id, track in actor_tracks.items():
        arr = np.asarray(track, dtype=float).reshape(-1, 2)
        if arr.size:
            tracks[str(actor_id)] = arr

    fig = Figure(figsize=(9.0, 12.0), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: a layout engine measures every artist's extent and doubles the draw time.
    grid = fig.add_gridspec(4, 1, height_ratios=(3.0, 1.0, 1.0, 1.0), left=0.09, right=0.97,
                            top=0.96, bottom=0.05, hspace=0.25)
    ax_map = fig.add_subplot(grid[0])
    if lines:
        ax_map.add_collection(LineCollection(lines, colors='0.7', linewidths=0.6, zorder=1))
    ax_map.plot(ego[:, 0], ego[:, 1], color='tab:blue', linewidth=2.0, label='ego', zorder=3)
    if t.size:
        ax_map.plot(*ego[0], marker='o', color='tab:blue', zorder=4)
        ax_map.plot(*ego[-1], marker='s', color='tab:blue', zorder=4)
    for k, (actor_id, track) in enumerate(sorted(tracks.items())):
        color = f'C{(k % 9) + 1}'
        ax_map.plot(track[:, 0], track[:, 1], color=color, linewidth=1.0, zorder=2)
        ax_map.plot(*track[0], marker='o', markersize=4, color=color, zorder=2)
        ax_map.annotate(actor_id, (track[0, 0], track[0, 1]), fontsize=7, color=color,
                        zorder=5)
    for label, xy in (stops_xy or {}).items():
        point = np.asarray(xy, dtype=float).reshape(2)
        ax_map.plot(*point, marker='x', markersize=8, color='black', zorder=5)
        ax_map.annotate(label, (point[0], point[1]), fontsize=7, zorder=5)
    event_t = np.asarray([e[0] for e in events], dtype=float)
    if event_t.size and t.size:
        ex = np.interp(event_t, t, ego[:, 0])
        ey = np.interp(event_t, t, ego[:, 1])
        ax_map.plot(ex, ey, linestyle='none', marker='*', markersize=10, color='tab:red',
                    zorder=6, label='events')
    ax_map.set_aspect('equal', adjustable='datalim')
    ax_map.autoscale_view()
    ax_map.set_xlabel('x [m] (map)')
    ax_map.set_ylabel('y [m] (map)')
    ax_map.legend(loc='upper right', fontsize=8)
    if title:
        ax_map.set_title(title)

    ax_speed = fig.add_subplot(grid[1])
    axes = [ax_speed, fig.add_subplot(grid[2], sharex=ax_speed),
            fig.add_subplot(grid[3], sharex=ax_speed)]
    for row, (ax, values, label) in enumerate(zip(
            axes, (speed, accel, jerk), ('speed [m/s]', 'accel [m/s²]', 'jerk [m/s³]'))):
        ax.plot(t, values, linewidth=1.0, color='tab:blue')
        ax.set_ylabel(label)
        ax.grid(True, linewidth=0.3)
        for event_time, event_label in events:
            ax.axvline(event_time, color='tab:red', linewidth=0.8, alpha=0.7)
            if row == 0:
                ax.annotate(event_label, (event_time, 1.0), xycoords=('data', 'axes fraction'),
                            fontsize=7, rotation=90, va='top', ha='right', color='tab:red')
    axes[-1].set_xlabel('sim time [s]')
    fig.savefig(path_png)
    return os.fspath(path_png)
