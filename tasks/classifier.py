"""Old path of tasks.genre.training, kept because champions registered before tasks/ was split into domain folders
unpickle their classes and functions from `tasks.classifier`. It is the same module object, not a copy."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("tasks.genre.training")
