"""kdtools.applications.streaming: the stream generator, windows and targets, the simulated clock on
hand-computed timelines, the accuracy bookkeeping and bad input."""
import pytest
import torch

from kdtools.applications import streaming as st


# ------------------------------------------------------------------------------------------------ the stream
def test_world_and_stream_are_deterministic_in_their_seeds():
    assert st.make_world(seed=0).recipes == st.make_world(seed=0).recipes
    assert st.make_world(seed=0).recipes != st.make_world(seed=1).recipes
    obs_a, act_a = st.make_stream(500, seed=4)
    obs_b, act_b = st.make_stream(500, seed=4)
    assert torch.equal(obs_a, obs_b) and torch.equal(act_a, act_b)
    assert not torch.equal(st.make_stream(500, seed=5)[1], act_a)


def test_recipes_never_repeat_an_action_and_use_the_vocabulary():
    world = st.make_world(n_actions=5, n_recipes=20, steps=9)
    assert len(world.recipes) == 20 and all(len(r) == 9 for r in world.recipes)
    assert all(a != b for r in world.recipes for a, b in zip(r, r[1:]))
    assert {a for r in world.recipes for a in r} <= set(range(5))


def test_stream_without_noise_or_skips_is_recipes_of_bounded_durations():
    world = st.make_world()
    obs, actions = st.make_stream(2000, seed=0, noise=0.0, skip=0.0, min_duration=3, max_duration=5)
    assert obs.shape == (2000, world.dim) and actions.dtype == torch.long
    assert torch.equal(obs, world.prototypes[actions])  # noise 0: every frame is its action's prototype
    change = torch.nonzero(actions[1:] != actions[:-1]).flatten() + 1
    runs = torch.diff(torch.cat([torch.tensor([0]), change]))[1:]  # every complete run of one action
    # a run is one step of 3-5 frames, or two when a recipe ends with the action the next one starts with
    assert int(runs.min()) >= 3 and int(runs.max()) <= 10 and float((runs <= 5).float().mean()) > 0.9
    # the sequence of actions is a concatenation of recipes: each run-to-run transition occurs in some recipe
    # or joins the end of one recipe to the start of another
    steps = {(r[i], r[i + 1]) for r in world.recipes for i in range(len(r) - 1)}
    joins = {(r[-1], q[0]) for r in world.recipes for q in world.recipes}
    sequence = actions[torch.cat([torch.tensor([0]), change])].tolist()
    assert all(pair in steps | joins for pair in zip(sequence, sequence[1:]))


# ------------------------------------------------------------------------------------ windows and horizons
def test_windows_hold_the_last_frames_with_zeros_before_the_start():
    obs = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 2)
    windows = st.make_windows(obs, torch.tensor([0, 2, 9]), window=4)
    assert windows.shape == (3, 4, 2)
    assert windows[0, :, 0].tolist() == [0, 0, 0, 0]  # three zero frames, then frame 0 (= 0)
    assert windows[1, :, 0].tolist() == [0, 0, 1, 2]
    assert windows[2, :, 0].tolist() == [6, 7, 8, 9]


def test_horizon_targets_are_the_actions_tau_frames_later():
    actions = torch.tensor([5, 5, 6, 6, 6, 7, 1, 1, 2, 3])
    targets = st.horizon_targets(actions, torch.tensor([0, 1, 3]), [1, 2, 4])
    assert targets.tolist() == [[5, 6, 6], [6, 6, 7], [6, 7, 1]]
    with pytest.raises(ValueError, match="longest horizon"):
        st.horizon_targets(actions, torch.tensor([6]), [1, 4])


def test_anticipator_outputs_one_distribution_per_horizon():
    model = st.Anticipator(dim=3, n_actions=5, horizons=(1, 2, 4), hidden=6, window=7)
    out = model(torch.randn(2, 7, 3))
    assert out.shape == (2, 3, 5)
    with pytest.raises(ValueError, match=r"windows must be \[B, 7, dim\], got \[2, 6, 3\]"):
        model(torch.randn(2, 6, 3))


# ------------------------------------------------------------------------------------------- the clock
@pytest.mark.parametrize("latency, period, n, expected", [
    # frame 0 at 0 ms, done 25; free at 25: newest frame 2 (20 ms), done 50; newest 5, done 75; newest 7, done 100
    (25.0, 10.0, 10, [-1, -1, -1, 0, 0, 2, 2, 2, 5, 5]),
    # exactly 3 periods: frame 0 done at 30 = arrival of frame 3, which counts and is started at once
    (30.0, 10.0, 8, [-1, -1, -1, 0, 0, 0, 3, 3]),
    # faster than the frames: each frame's prediction is ready half a period later, in use from the next frame
    (5.0, 10.0, 5, [-1, 0, 1, 2, 3]),
    # exactly one period: frame k's prediction finishes as frame k + 1 arrives; nothing is skipped
    (10.0, 10.0, 5, [-1, 0, 1, 2, 3]),
    # a little over one period: frame 0 done 11 (frame 1 arrived at 10: start it), done 22; frame 2 done 33 ...
    # the model falls 1 ms further behind per frame until, free at 110, it starts frame 11 and skips frame 10
    (11.0, 10.0, 13, [-1, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]),
    (0.0, 10.0, 4, [0, 1, 2, 3]),  # an instantaneous model: streaming = offline
])
def test_schedule_on_hand_computed_timelines(latency, period, n, expected):
    assert st.streaming_schedule(latency, period, n).tolist() == expected


def test_schedule_depends_only_on_latency_over_period():
    assert torch.equal(st.streaming_schedule(2.5, 1.0, 40), st.streaming_schedule(0.025, 0.01, 40))


@pytest.mark.parametrize("latency", [0.3, 1.0, 1.7, 2.5, 3.0, 6.2])
def test_age_of_the_prediction_in_use_is_between_r_and_2r_plus_one_frames(latency):
    # the prediction in use at k started at s with j <= s <= k - r (j: its frame); the next one, started at
    # s + r, has not finished: s + 2r > k, and s < j + 1 (j was the newest frame at s), so k - j < 1 + 2r
    in_use = st.streaming_schedule(latency, 1.0, 300)
    frames = torch.arange(20, 300)
    age = (frames - in_use[frames]).double()
    assert bool((age >= latency - 1e-9).all()) and bool((age < 1 + 2 * latency).all())


@pytest.mark.parametrize("kwargs, message", [
    (dict(latency=-1.0, frame_period=1.0, n_frames=5), "latency must be a finite number >= 0, got -1.0"),
    (dict(latency=float("nan"), frame_period=1.0, n_frames=5), "latency must be a finite number"),
    (dict(latency=1.0, frame_period=0.0, n_frames=5), "frame_period must be a finite number > 0, got 0.0"),
    (dict(latency=1.0, frame_period=1.0, n_frames=0), "n_frames must be a positive int, got 0"),
])
def test_schedule_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        st.streaming_schedule(**kwargs)


# ---------------------------------------------------------------------------------------- the bookkeeping
def test_accuracy_offline_and_streaming_by_hand():
    actions = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    horizons = [1, 2]
    # a perfect anticipator: at frame k it predicts actions[k + 1] and actions[k + 2]
    predictions = torch.stack([actions.roll(-1), actions.roll(-2)], 1)
    frames = torch.tensor([2, 3, 4, 5])
    assert st.anticipation_accuracy(predictions, actions, horizons, frames) == {1: 100.0, 2: 100.0}
    # streaming with one frame of lag: frame k uses frame k - 1's prediction, made for k, k + 1
    in_use = torch.arange(8) - 1
    got = st.anticipation_accuracy(predictions, actions, horizons, frames, in_use)
    # horizon 1 at k = 2..5 compares actions[k] with actions[k + 1]: equal at k = 2, 4 only
    assert got == {1: 50.0, 2: 50.0}
    # no prediction yet (-1) counts as wrong
    assert st.anticipation_accuracy(predictions, actions, horizons, frames, torch.full((8,), -1)) == {1: 0.0, 2: 0.0}


def test_effective_horizon_adds_the_age_of_the_prediction():
    in_use = st.streaming_schedule(25.0, 10.0, 10)
    frames = torch.tensor([3, 5, 7, 9])
    assert st.effective_horizons(in_use, frames, tau=2).tolist() == [5, 5, 7, 6]


def test_bad_predictions_shape_and_horizons_are_named():
    with pytest.raises(ValueError, match=r"predictions must be \[n_frames, 2\]"):
        st.anticipation_accuracy(torch.zeros(8, 3, dtype=torch.long), torch.zeros(8, dtype=torch.long), [1, 2],
                                 torch.tensor([0]))
    with pytest.raises(ValueError, match="horizons must be a non-empty list"):
        st.Anticipator(3, 4, horizons=[])
    with pytest.raises(ValueError, match="n_frames must be a positive int"):
        st.make_stream(0, seed=0)


def test_kd_training_needs_teacher_logits_and_runs_an_epoch():
    obs, actions = st.make_stream(300, seed=0)
    model = st.Anticipator(obs.shape[1], 8, horizons=(1, 2), hidden=4, window=3)
    with pytest.raises(ValueError, match="alpha=0.5 needs teacher_logits"):
        st.train_anticipator(model, obs, actions, alpha=0.5)
    teacher = st.Anticipator(obs.shape[1], 8, horizons=(1, 2), hidden=5, window=4)
    logits = st.predict_stream(teacher, obs)
    assert logits.shape == (300, 2, 8)
    history = st.train_anticipator(model, obs, actions, epochs=1, teacher_logits=logits, alpha=0.5,
                                   valid=st.make_stream(200, seed=1))
    assert len(history["loss"]) == 1 and history["best_epoch"] == 1


def test_training_is_deterministic_in_its_seed():
    obs, actions = st.make_stream(300, seed=0)
    a = st.Anticipator(obs.shape[1], 8, horizons=(1, 2), hidden=4, window=3)
    b = st.Anticipator(obs.shape[1], 8, horizons=(1, 2), hidden=4, window=3)
    b.load_state_dict(a.state_dict())
    ha = st.train_anticipator(a, obs, actions, epochs=1, seed=3)
    hb = st.train_anticipator(b, obs, actions, epochs=1, seed=3)
    assert ha["loss"] == hb["loss"]


def test_median_cpu_ms_counts_work_not_sleep():
    import time

    assert st.median_cpu_ms(time.sleep, 0.01, warmup=0, repeats=3) < 5  # sleeping costs (almost) no CPU
    busy = st.median_cpu_ms(lambda: sum(range(200_000)), warmup=1, repeats=3)
    assert busy > 0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        st.median_cpu_ms(time.sleep, 0.0, repeats=0)
    with pytest.raises(ValueError, match="fn must be callable, got int"):
        st.median_cpu_ms(3)
