"""The pieces of the Ray Tune search (steep.pipeline.tune.ray_tune) without running one: ASHA's early
stopping as steep bends it, and the callback that prints one line per trial. The whole search on Ray is
test_search_on_ray.py. Ray is imported inside the tests, as the search imports it only when it runs."""

from __future__ import annotations

import pickle

from tests.steep.pipeline.tune.conftest import outcome


def test_early_stopping_stops_the_worse_half_but_never_the_defaults():
    from ray.tune.schedulers import TrialScheduler

    from steep.pipeline.tune.ray_tune import asha as make_asha

    class Trial:
        def __init__(self, trial_id):
            self.trial_id, self.config = trial_id, {}

    stopped: dict[str, int] = {}
    asha = make_asha(3, stopped, defaults=True, base_epochs=3)
    defaults, good, bad = Trial("abcde_00000"), Trial("abcde_00001"), Trial("abcde_00002")
    for trial in (defaults, good, bad):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, good, {"epoch": 1, "val_loss": 2.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, bad, {"epoch": 1, "val_loss": 4.0}) == TrialScheduler.STOP
    assert stopped == {"abcde_00002": 1}
    # the defaults are worse than both: ASHA would stop them, steep keeps them as the reference
    assert asha.on_trial_result(None, defaults, {"epoch": 1, "val_loss": 5.0}) == TrialScheduler.CONTINUE
    assert "abcde_00000" not in stopped
    # reaching the last epoch does not stop a trial: it still has to be scored
    assert asha.on_trial_result(None, good, {"epoch": 3, "val_loss": 1.0}) == TrialScheduler.CONTINUE


def test_a_trial_that_trained_its_last_epoch_is_scored_even_when_behind_on_loss():
    from ray.tune.schedulers import TrialScheduler

    from steep.pipeline.tune.ray_tune import asha as make_asha

    class Trial:
        def __init__(self, trial_id, epochs=None):
            self.trial_id, self.config = trial_id, {} if epochs is None else {"training.epochs": epochs}

    stopped: dict[str, int] = {}
    asha = make_asha(2, stopped, defaults=False, base_epochs=2)
    leader, short, behind = Trial("abcde_00000"), Trial("abcde_00001", epochs=1), Trial("abcde_00002")
    for trial in (leader, short, behind):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, leader, {"epoch": 1, "val_loss": 2.0}) == TrialScheduler.CONTINUE
    # a 1-epoch trial behind at epoch 1 has finished training: only its generation is left
    assert asha.on_trial_result(None, short, {"epoch": 1, "val_loss": 3.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, leader, {"epoch": 2, "val_loss": 1.5}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, behind, {"epoch": 1, "val_loss": 1.9}) == TrialScheduler.CONTINUE
    # at epoch 2 (this trial's last) ASHA's rung would stop it: it is scored instead
    assert asha.on_trial_result(None, behind, {"epoch": 2, "val_loss": 1.6}) == TrialScheduler.CONTINUE
    assert stopped == {}
    # a 2-epoch trial behind at epoch 1 still stops there
    late = Trial("abcde_00003")
    asha.on_trial_add(None, late)
    assert asha.on_trial_result(None, late, {"epoch": 1, "val_loss": 9.0}) == TrialScheduler.STOP
    assert stopped == {"abcde_00003": 1}


def test_the_search_prints_one_line_per_trial_as_it_ends_and_keeps_its_time_and_outcome():
    from steep.pipeline.tune.ray_tune import TrialLines

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    ended: list[tuple[str, bool]] = []

    def outcome_of(trial, seconds, failed):
        ended.append((trial.trial_id, failed))
        assert seconds >= 0
        return outcome(int(trial.trial_id[-1]) + 1, "failed" if failed else "finished", seconds=seconds)

    lines: list[str] = []
    callback = TrialLines(outcome_of, lambda o: f"trial {o.index} {o.status}", lines.append)
    done, broken = Trial("abcde_00000"), Trial("abcde_00001")
    callback.on_trial_start(0, [], done)
    callback.on_trial_start(0, [], broken)
    callback.on_trial_complete(1, [], done)
    callback.on_trial_error(1, [], broken)
    assert lines == ["trial 1 finished", "trial 2 failed"]
    assert ended == [("abcde_00000", False), ("abcde_00001", True)]
    assert (
        set(callback.shown) == {"abcde_00000", "abcde_00001"}
        and callback.shown["abcde_00001"].status == "failed"
    )
    assert all(0 <= s < 60 for s in callback.seconds.values())
    # Tune saves its callbacks with the experiment: what it saves holds none of the lines or the log
    restored = pickle.loads(pickle.dumps(callback))
    assert not hasattr(restored, "shown")
