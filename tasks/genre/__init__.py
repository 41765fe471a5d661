"""The title -> genre classifier: features, candidates, cross-validated selection, training and
registration, its report and pyfunc wrapper, and labeling the covers with the champion."""
