"""Hyperparameter search with Optuna, over the engine's own runs: every trial is a normal run folder.

    python solutions/tune.py --data-dir processed_data --save-dir runs/tune --n-trials 20
    python solutions/tune.py --data-dir processed_data --save-dir runs/tune --n-trials 20 --jobs 2
    python solutions/tune.py ... --storage postgresql://user@db/optuna --study-name census   # several machines

What a study folder holds:

    runs/tune/study.db           the Optuna study (SQLite; --storage names a shared database instead)
    runs/tune/trials/trial-0003  one run folder per trial, the layout train_pipeline.py writes
    runs/tune/tuning.json        the summary: every trial, the best one's settings and test score with its interval,
                                 boosted trees tuned with the same budget, and the network against them
    runs/tune/report.html        the best trial's training report with a tuning section

TPE samples the learning rate, width, depth, dropout, weight decay, batch size and model family (`SPACE`; a
YAML --space file changes the ranges, --search picks names); the median pruner reads each epoch's validation
score through a sink (`PruningSink`) and stops a trial that trails the others. The objective is the best epoch's
validation score (the test split is only read for the best trial, at the end).

Killing the tuner and running the same command continues the study, each trial counted once: a trial whose
process died (SIGKILL, a crash, a lost machine) or was interrupted is failed and retried, with the same settings,
into the same run folder, where the engine resumes from its last checkpoint (the retry follows Optuna's own
`RetryHeartbeatStaleTrialCallback`; on a shared database the heartbeat finds trials of machines that went away).
The budget counts finished trials (completed or pruned) across every process of the study.

    settings.py  TuneSettings, the study folder's files, --config (the settings every trial shares)
    space.py     SPACE and TREE_SPACE, --space files, suggest, trial_values (sampled values -> the engine's settings)
    study.py     storage, open_study (refuses another space or data), recover (trials cut short), optimise (the budget)
    trials.py    PruningSink, the network's and the trees' objectives
    summary.py   tuning.json, importances, the tuned trees against the best trial, the MLflow parent run
    run.py       tune (the whole study), --jobs workers, main (solutions/tune.py)
"""
from pipeline.tune.run import build_parser, main, tune
from pipeline.tune.settings import REPORT_FILE, STUDY_FILE, SUMMARY_FILE, TuneSettings, read_training
from pipeline.tune.space import SPACE, TREE_SPACE, read_space, suggest, trial_values
from pipeline.tune.study import alive, counted, objective_metric, open_study, optimise, recover
from pipeline.tune.summary import ParentRun, summarise
from pipeline.tune.trials import PruningSink, fit_trees

__all__ = ["REPORT_FILE", "SPACE", "STUDY_FILE", "SUMMARY_FILE", "TREE_SPACE", "ParentRun", "PruningSink",
           "TuneSettings", "alive", "build_parser", "counted", "fit_trees", "main", "objective_metric", "open_study",
           "optimise", "read_space", "read_training", "recover", "suggest", "summarise", "trial_values", "tune"]
