"""Jobs side by side (taskonomy.workers): order, errors, and the same weights whatever the number of workers."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import torch

from taskonomy.workers import job_workers, run_jobs


def test_results_come_back_in_job_order_and_each_is_handed_over_once():
    seen, threads = [], set()

    def square(x: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.01 * (x % 3))
        return x * x

    out = run_jobs(square, range(8), workers=2, cost=lambda x: x, done=lambda i, r: seen.append((i, r)))
    assert out == [x * x for x in range(8)]
    assert sorted(seen) == [(i, i * i) for i in range(8)]
    assert len(threads) == 2


def test_the_longest_job_starts_first_and_one_worker_runs_in_this_thread():
    started = []
    run_jobs(lambda x: started.append((x, threading.current_thread().name)), [1, 5, 3], workers=1,
             cost=lambda x: x)
    assert [x for x, _ in started] == [5, 3, 1]
    assert {name for _, name in started} == {threading.current_thread().name}


def test_a_failing_job_is_raised_in_the_caller_and_torch_threads_are_restored():
    before = torch.get_num_threads()

    def fail_on_two(x: int) -> int:
        assert torch.get_num_threads() == 1  # every job on one intra-op thread
        if x == 2:
            raise ValueError("job 2 broke")
        return x

    with pytest.raises(ValueError, match="job 2 broke"):
        run_jobs(fail_on_two, range(4), workers=2)
    assert torch.get_num_threads() == before


def test_one_job_per_allowed_core_on_a_cpu_and_one_on_a_gpu():
    assert job_workers(1) == 1
    assert 1 <= job_workers(None) == job_workers(10_000)
    assert job_workers(4, torch.device("cuda")) == 1


def test_stage_one_trains_the_same_weights_on_one_worker_and_on_two(tiny_config, tiny_data, tmp_path):
    from taskonomy.extract.checkpoints import load_checkpoint
    from taskonomy.extract.pipeline import train_all

    config = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(
        update={"epochs": 1, "tasks": ["normal", "egomotion"]})})
    payloads = []
    for threads in (1, 2):
        run = tmp_path / f"threads{threads}"
        run.mkdir()
        shutil.copytree(tiny_data, run / "data.zarr")
        train_all(config.model_copy(update={"threads": threads}), run, progress=False)
        payloads.append({t: load_checkpoint(run / "models" / f"{t}.pt") for t in config.train.tasks})
    for task in config.train.tasks:
        one, two = payloads[0][task], payloads[1][task]
        for key, weights in one["state_dict"].items():
            assert torch.equal(weights, two["state_dict"][key]), (task, key)
        np.testing.assert_array_equal(np.asarray(one["test_losses"]), np.asarray(two["test_losses"]))
