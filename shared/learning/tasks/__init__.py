"""Task kinds by name: each brings its loss, its metrics and their direction."""

from fedstream.shared.learning.metrics import ACCURACY, MAE, METRICS, RMSE, Metric
from fedstream.shared.learning.tasks.base import Task, evaluate
from fedstream.shared.learning.tasks.classification import Classification
from fedstream.shared.learning.tasks.regression import Regression
from fedstream.shared.protocol.arch import TaskKind

TASKS: dict[TaskKind, Task] = {TaskKind.CLASSIFICATION: Classification(),
                               TaskKind.REGRESSION: Regression()}


def task_for(kind: TaskKind | str) -> Task:
    """The task of a kind (a `TaskKind` or its string)."""
    return TASKS[TaskKind(kind)]


__all__ = ["ACCURACY", "MAE", "METRICS", "RMSE", "TASKS", "Classification", "Metric",
           "Regression", "Task", "TaskKind", "evaluate", "task_for"]
