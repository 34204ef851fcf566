"""The vectorised hot paths of the tracker and the predictor against straightforward references
(the plain loops they replace): the same results, bit for bit."""

import bisect
import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from robotaxi_stack.prediction import evaluation
from robotaxi_stack.prediction import predictor as predictor_module
from robotaxi_stack.prediction.predictor import Predictor, PredictorParams
from robotaxi_stack.sim import actors as act
from robotaxi_stack.tracking import tracker as tracker_module


def _random_graph(rng, num_t, num_d, num_edges):
    t_of = rng.integers(0, num_t, num_edges)
    d_of = rng.integers(0, num_d, num_edges)
    valid = np.zeros((num_t, num_d), bool)
    valid[t_of, d_of] = True
    return valid


@pytest.mark.parametrize('seed', range(6))
def test_cluster_labels_are_the_lowest_node_of_each_connected_component(seed):
    rng = np.random.default_rng(seed)
    num_t, num_d = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    t_of, d_of = np.nonzero(_random_graph(rng, num_t, num_d, int(rng.integers(1, 80))))
    num = num_t + num_d
    label = tracker_module._cluster_labels(num, t_of, num_t + d_of)
    graph = coo_matrix((np.ones(len(t_of)), (t_of, num_t + d_of)), shape=(num, num))
    _, reference = connected_components(graph, directed=False)
    for component in np.unique(reference):
        nodes = np.flatnonzero(reference == component)
        assert np.all(label[nodes] == nodes.min())


def test_cluster_labels_settle_on_a_long_chain():
    # 0 - 1 - 2 - ... alternating tracks and detections, numbered against the chain order.
    num = 200
    chain = np.random.default_rng(1).permutation(num)
    u, v = chain[:-1], chain[1:]
    label = tracker_module._cluster_labels(num, u, v)
    assert np.all(label == 0)


@pytest.mark.parametrize('seed', range(8))
def test_clustered_assignment_equals_one_dense_hungarian_assignment(seed):
    rng = np.random.default_rng(seed)
    num_t, num_d = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    valid = _random_graph(rng, num_t, num_d, int(rng.integers(0, 60)))
    cost = rng.uniform(0.0, 25.0, (num_t, num_d))
    t_of, d_of = np.nonzero(valid)
    rows, cols = tracker_module._assign(num_t, num_d, t_of, d_of, cost[t_of, d_of])
    r, c = linear_sum_assignment(np.where(valid, cost, tracker_module._GATED_COST))
    ok = valid[r, c]
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(zip(r[ok].tolist(),
                                                                   c[ok].tolist()))
    assert rows.dtype == np.int64 and cols.dtype == np.int64


def test_assignment_of_no_gated_pair_is_empty():
    empty = np.zeros(0, np.int64)
    rows, cols = tracker_module._assign(3, 4, empty, empty, np.zeros(0))
    assert rows.shape == (0,) and cols.shape == (0,)


@pytest.mark.parametrize('seed', range(5))
def test_grouping_helpers_match_plain_loops(seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 12, int(rng.integers(1, 40)))
    first, group = predictor_module._group_by(codes)
    seen: dict[int, int] = {}
    for i, code in enumerate(codes.tolist()):
        seen.setdefault(code, i)
    assert first.tolist() == sorted(seen.values())
    assert [first[g] for g in group.tolist()] == [seen[c] for c in codes.tolist()]
    cost = rng.integers(0, 3, len(codes)).astype(float)  # ties on purpose
    best = predictor_module._first_per_group(group, len(first), cost)
    for g, index in enumerate(best.tolist()):
        members = np.flatnonzero(group == g)
        assert index == members[np.argmin(cost[members])]  # argmin: the first of equals
    other = rng.integers(0, 2, len(codes))
    pairs = list(zip(codes.tolist(), other.tolist()))
    starts = predictor_module._run_starts(codes, other)
    assert starts.tolist() == [i == 0 or pairs[i] != pairs[i - 1] for i in range(len(pairs))]


def test_distinct_codes_are_their_own_groups():
    first, group = predictor_module._group_by(np.array([5, 3, 9]))
    assert first.tolist() == [0, 1, 2] and group.tolist() == [0, 1, 2]
    assert predictor_module._first_per_group(group, 3, np.zeros(3)).tolist() == [0, 1, 2]


def test_sequence_table_grows_and_pads_rows():
    table = predictor_module._SequenceTable(capacity=2)
    rows = []
    for n in range(1, 13):  # wider than the initial 8 lanelets, more rows than the capacity
        lanes = tuple(range(n))
        starts = [10.0 * k for k in range(n)]
        stops = [10.0 * k + 5.0 for k in range(n // 2)]
        turns = [(10.0 * k, 0.1, -math.inf) for k in range(n // 3)]
        table.add(lanes, starts, 10.0 * n, n % 2 == 0, 1.0 / n, turns, stops)
        rows.append((lanes, starts, stops, turns))
    assert len(table) == 12
    for i, (lanes, starts, stops, turns) in enumerate(rows):
        n = len(lanes)
        assert table.num_lanes[i] == n and table.num_stops[i] == len(stops)
        assert table.lanes[i, :n].tolist() == list(lanes)
        assert np.all(table.lanes[i, n:] == lanes[-1])
        assert table.starts_m[i, :n].tolist() == starts and np.all(table.starts_m[i, n:] == np.inf)
        assert table.stops_m[i, :len(stops)].tolist() == stops
        assert np.all(table.stops_m[i, len(stops):] == np.inf)
        assert table.turn_entry_m[i, :len(turns)].tolist() == [t[0] for t in turns]
        assert np.all(table.turn_entry_m[i, len(turns):] == -1.0)
        assert np.all(table.turn_kappa[i, len(turns):] == 0.0)
        assert table.length_m[i] == 10.0 * n and table.weight[i] == 1.0 / n
        assert bool(table.dead_end[i]) == (n % 2 == 0)
        for c in range(1, n + 1):
            assert table.keys[i, c] == table.key_ids[lanes[:c]]
        for c in range(2, n + 1):
            assert table.tail_keys[i, c] == table.key_ids[lanes[1:c]]
    # The same lanelet tuple has the same id in every row.
    assert table.keys[11, 3] == table.keys[5, 3] == table.key_ids[(0, 1, 2)]


def _reference_turn_factor(pred, row, arc_m, v_mps, half_length_m):
    """The per-sequence loop: every turn, every stop line."""
    p, seqs = pred.params, pred._sequences
    stops = seqs.stops_m[row, :seqs.num_stops[row]].tolist()
    factor = 1.0
    for entry_m, kappa in zip(seqs.turn_entry_m[row].tolist(), seqs.turn_kappa[row].tolist()):
        distance = entry_m - arc_m
        if distance < 0.0 or kappa <= 0.0:
            continue
        if any(s - arc_m - half_length_m > -1.0 and s <= entry_m + 1e-6 for s in stops):
            continue
        v2 = max(v_mps * v_mps - 2.0 * p.comfort_decel_mps2 * distance, 0.0)
        excess = v2 * kappa - p.max_turn_lat_accel_mps2
        if excess > 0.0:
            factor *= math.exp(-excess / p.turn_lat_accel_scale_mps2)
    return factor


def _reference_hypotheses(pred, obj, lane, arc, need, v, logp, half):
    """Candidate by candidate, sequence by sequence, with dictionaries."""
    p, seqs = pred.params, pred._sequences
    best: dict[tuple, list] = {}
    for k in range(len(obj)):
        bucket = int(math.ceil(max(need[k], 1.0) / 20.0))
        group = np.searchsorted(pred._group_code,
                                lane[k] * predictor_module._GROUP_BUCKETS + bucket)
        first = int(pred._group_first[group])
        near_end = pred._lane_len[lane[k]] - arc[k] < 1.0
        merged: dict[tuple, list] = {}
        for row in range(first, first + int(pred._group_count[group])):
            n = int(seqs.num_lanes[row])
            lanes = tuple(seqs.lanes[row, :n].tolist())
            key = lanes[:bisect.bisect_left(seqs.starts_m[row, :n].tolist(), need[k])]
            if near_end and len(key) > 1:
                key = key[1:]
            weight = float(seqs.weight[row]) * _reference_turn_factor(pred, row, arc[k], v[k],
                                                                      half[k])
            entry = merged.get(key)
            if entry is None:
                merged[key] = [weight, row]
            else:
                entry[0] += weight
                if seqs.weight[row] > seqs.weight[entry[1]]:
                    entry[1] = row
        for key, (weight, row) in merged.items():
            score = logp[k] + math.log(max(weight, 1e-12))
            kept = best.get((obj[k], key))
            if kept is None or score > kept[0]:
                best[(obj[k], key)] = [score, k, row]
    per_object: dict[int, list] = {}
    for (o, _), value in best.items():
        per_object.setdefault(o, []).append(value)
    cand, rows, prob = [], [], []
    for values in per_object.values():
        top = max(v[0] for v in values)
        weights = [math.exp(v[0] - top) for v in values]
        total = sum(weights)
        ranked = sorted(range(len(values)), key=lambda i: -weights[i])[:p.max_modes]
        keep = [i for i in ranked if weights[i] / total >= p.min_mode_probability] \
            or ranked[:1]
        for i in keep:
            cand.append(values[i][1])
            rows.append(values[i][2])
            prob.append(weights[i] / total)
    return cand, rows, prob


@pytest.mark.parametrize('max_branch_forks', [1, 3])  # 3: turns behind several stop lines
def test_lane_hypotheses_equal_the_per_candidate_loop(monkeypatch, max_branch_forks):
    town, specs = evaluation.make_scenario(4, cars=30, cyclists=4, pedestrians=6,
                                           duration_s=30.0, blocks=(3, 2))
    world = act.ActorWorld(specs)
    pred = Predictor(town, PredictorParams(max_branch_forks=max_branch_forks))
    calls = []
    original = Predictor._hypotheses

    def recording(self, *args):
        result = original(self, *args)
        calls.append(([a.copy() for a in args], result))
        return result

    monkeypatch.setattr(Predictor, '_hypotheses', recording)
    rng = np.random.default_rng(0)
    for _ in range(40):
        snapshot = world.step(0.1)
        pred.predict(evaluation._objects(snapshot, rng, (0.2, 0.05, 0.3)), snapshot.time_s)
    assert len(calls) == 40
    candidates = modes = multi_modal = 0
    for args, (cand, rows, prob) in calls:
        ref_cand, ref_rows, ref_prob = _reference_hypotheses(pred, *(a.tolist() for a in args))
        assert cand.tolist() == ref_cand
        assert rows.tolist() == ref_rows
        assert prob.tolist() == ref_prob  # bit for bit
        candidates += len(args[0])
        modes += len(cand)
        multi_modal += len(cand) - len(np.unique(args[0][cand]))
    # The scenes exercise what the merging is for: several candidates per object and forks.
    assert candidates > 40 * 20 and multi_modal > 0 and modes > 0
    # Turn plausibility of every sequence seen, from stations before, between and after its
    # stop lines and turns, at speeds from standstill to far too fast for the turns.
    rows = np.repeat(np.arange(len(pred._sequences)), 100)
    arc = rng.uniform(-0.05, 1.1, len(rows)) * pred._sequences.length_m[rows]
    v = rng.uniform(0.0, 25.0, len(rows))
    half = rng.uniform(0.5, 3.0, len(rows))
    factor = pred._turn_plausibility(rows, arc, v, half)
    reference = [_reference_turn_factor(pred, *args)
                 for args in zip(rows.tolist(), arc.tolist(), v.tolist(), half.tolist())]
    assert factor.tolist() == reference
    assert 0.0 < np.mean(factor < 1.0) < 1.0
