"""Old path of tasks.genre.models, kept because champions registered before tasks/ was split into domain folders
unpickle their classes and functions from `tasks.genre_models`. It is the same module object, not a copy."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("tasks.genre.models")
