"""Old path of tasks.genre.features, kept because champions registered before tasks/ was split into domain folders
unpickle their classes and functions from `tasks.text_features`. It is the same module object, not a copy."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("tasks.genre.features")
