"""Correct and wrong answers to the streaming exercise (notebooks/06_applications/streaming_anticipation.ipynb),
for tests/test_exercises.py: check_prediction_in_use must accept the first and reject each of the second with its
hint."""
import math

import torch


# ----------------------------------------------------------------------------- correct
def event_loop(latency, frame_period, n_frames):
    finished = []  # (time the prediction becomes available, frame it was made from)
    free_at, next_frame = 0.0, 0
    while True:
        frame = max(next_frame, math.floor(free_at / frame_period + 1e-9))
        if frame >= n_frames:
            break
        start = max(free_at, frame * frame_period)
        free_at, next_frame = start + latency, frame + 1
        finished.append((free_at, frame))
    in_use = torch.full((n_frames,), -1, dtype=torch.long)
    for k in range(n_frames):
        ready = [frame for done, frame in finished if done <= k * frame_period + 1e-9]
        if ready:
            in_use[k] = ready[-1]
    return in_use


def with_searchsorted(latency, frame_period, n_frames):
    # the frames the model starts on, and when: j_next = max(j + 1, newest arrived), start = max(free, arrival)
    frames, starts = [0], [0.0]
    while True:
        free = starts[-1] + latency
        j = max(frames[-1] + 1, int(free // frame_period + 1e-9))
        if j >= n_frames:
            break
        frames.append(j)
        starts.append(max(free, j * frame_period))
    done = torch.tensor(starts, dtype=torch.float64) + latency
    arrivals = torch.arange(n_frames, dtype=torch.float64) * frame_period
    count = torch.searchsorted(done, arrivals + 1e-9, right=True)  # predictions finished by each arrival
    return torch.cat([torch.tensor([-1]), torch.tensor(frames)])[count]


def library_call(latency, frame_period, n_frames):
    from kdtools.applications.streaming import streaming_schedule
    return streaming_schedule(latency, frame_period, n_frames)


# ----------------------------------------------------------------------------- wrong
def offline(latency, frame_period, n_frames):
    return torch.arange(n_frames)


def pipelined(latency, frame_period, n_frames):
    lag = math.ceil(latency / frame_period - 1e-9)
    return (torch.arange(n_frames) - lag).clamp(min=-1)


def queued(latency, frame_period, n_frames):
    in_use, free_at, finished = torch.full((n_frames,), -1, dtype=torch.long), 0.0, []
    for frame in range(n_frames):
        free_at = max(free_at, frame * frame_period) + latency
        finished.append(free_at)
    for k in range(n_frames):
        ready = [f for f, done in enumerate(finished) if done <= k * frame_period + 1e-9]
        in_use[k] = ready[-1] if ready else -1
    return in_use


def strict_finish(latency, frame_period, n_frames):
    out = event_loop(latency, frame_period, n_frames)
    # the same schedule, but a prediction finishing exactly at an arrival counts only from the next frame
    finished, free_at, next_frame = [], 0.0, 0
    while True:
        frame = max(next_frame, math.floor(free_at / frame_period + 1e-9))
        if frame >= n_frames:
            break
        free_at, next_frame = max(free_at, frame * frame_period) + latency, frame + 1
        finished.append((free_at, frame))
    for k in range(n_frames):
        ready = [frame for done, frame in finished if done < k * frame_period - 1e-9]
        out[k] = ready[-1] if ready else -1
    return out


def started_not_finished(latency, frame_period, n_frames):
    starts, free_at, next_frame = [], 0.0, 0
    while True:
        frame = max(next_frame, math.floor(free_at / frame_period + 1e-9))
        if frame >= n_frames:
            break
        start = max(free_at, frame * frame_period)
        free_at, next_frame = start + latency, frame + 1
        starts.append((start, frame))
    return torch.tensor([max([f for s, f in starts if s <= k * frame_period + 1e-9], default=-1)
                         for k in range(n_frames)])


def late_start(latency, frame_period, n_frames):
    finished, free_at, next_frame = [], 0.0, 0
    while True:
        # only frames that arrived strictly before the model became free count as arrived
        frame = max(next_frame, math.ceil(free_at / frame_period - 1e-9) - 1)
        if frame >= n_frames:
            break
        free_at, next_frame = max(free_at, frame * frame_period) + latency, frame + 1
        finished.append((free_at, frame))
    return torch.tensor([max([f for done, f in finished if done <= k * frame_period + 1e-9], default=-1)
                         for k in range(n_frames)])


def returns_a_list(latency, frame_period, n_frames):
    return event_loop(latency, frame_period, n_frames).tolist()


def not_implemented(latency, frame_period, n_frames):
    raise NotImplementedError


CHECKER_CASES = {
    "check_prediction_in_use": {
        "correct": [event_loop, with_searchsorted, library_call],
        "wrong": [
            (offline, "that is offline evaluation"),
            (pipelined, "as if it had a free worker for each"),
            (queued, "starts on the NEWEST frame that has arrived"),
            (strict_finish, "(<=, not <)"),
            (started_not_finished, "the prediction the model is still WORKING on"),
            (late_start, "a frame that arrives at the very moment the model becomes free"),
            (returns_a_list, "returned a list"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
