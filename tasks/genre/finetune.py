"""A MiniLM sentence encoder fine-tuned end to end on title (+ author) -> genre.

The candidate the field tries after bag-of-words models: every transformer weight (or the top
layers only, `frozen_layers`) learns the genres, with a class-balanced, label-smoothed loss, the
best validation-loss checkpoint kept (early stopping), and a wall-clock budget per fit so CPU
users get a bounded run and GPU users (picked automatically) get full epochs.

Kept free of Prefect and MLflow imports like the other candidates: the fitted estimator is
pickled into the registered model, its weights and tokenizer included, so serving needs
neither the bundled MiniLM package nor the hub.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from tasks.platform.pretrained import BUNDLED_MINILM, load_minilm, torch_device

log = logging.getLogger(__name__)

HEAD_LR_FACTOR = 20.0


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * count): every genre weighs the same in the loss, as class_weight='balanced' does."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


class FineTunedMiniLM(BaseEstimator, ClassifierMixin):
    """(title, author) rows -> genre logits from a fine-tuned MiniLM with a linear head on its mean pool.

    `fit` reads a 2-column object array (title, author); the author is the tokenizer's second
    segment, so the model sees which words are the title.
    """

    def __init__(self, model: str = BUNDLED_MINILM, budget_seconds: float = 600.0, max_epochs: int = 3,
                 learning_rate: float = 5e-5, batch_size: int = 32, label_smoothing: float = 0.1,
                 validation_fraction: float = 0.1, frozen_layers: int = 0, max_tokens: int = 48,
                 device: str = "auto", seed: int = 0) -> None:
        self.model = model
        self.budget_seconds = budget_seconds
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.label_smoothing = label_smoothing
        self.validation_fraction = validation_fraction
        self.frozen_layers = frozen_layers
        self.max_tokens = max_tokens
        self.device = device
        self.seed = seed

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, rows: np.ndarray, y: np.ndarray) -> FineTunedMiniLM:
        import torch

        torch.manual_seed(self.seed)
        rows, y = np.asarray(rows, dtype=object), np.asarray(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        self._build(len(self.classes_))
        fit_rows, val_rows = self._validation_split(labels)
        weights = torch.tensor(balanced_class_weights(labels[fit_rows], len(self.classes_)), device=self.device_)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=self.label_smoothing)
        trainable = [p for p in self.network_.parameters() if p.requires_grad]
        head = list(self.network_.head.parameters())
        body = [p for p in trainable if all(p is not h for h in head)]
        # The new head starts from random weights: it learns HEAD_LR_FACTOR times faster than the pretrained body.
        rates = [self.learning_rate, self.learning_rate * HEAD_LR_FACTOR]
        optimizer = torch.optim.AdamW([{"params": body, "lr": rates[0]}, {"params": head, "lr": rates[1]}], weight_decay=0.01)
        steps_per_epoch = max(1, -(-len(fit_rows) // self.batch_size))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, rates, total_steps=steps_per_epoch * self.max_epochs,
                                                       pct_start=0.06, anneal_strategy="linear")
        started, best_loss, best_state, history = time.perf_counter(), np.inf, None, []
        rng = np.random.default_rng(self.seed)
        checks = max(1, steps_per_epoch // 4)  # validate four times an epoch: a short budget still gets a best point
        step, out_of_time = 0, False
        for epoch in range(self.max_epochs):
            order = fit_rows[rng.permutation(len(fit_rows))]
            for batch in tqdm(np.array_split(order, steps_per_epoch), desc=f"fine-tune epoch {epoch + 1}", unit="batch",
                              leave=False, disable=None):
                self.network_.train()
                with self._autocast():
                    logits = self._logits(rows[batch])
                loss = loss_fn(logits.float(), torch.as_tensor(labels[batch], device=self.device_))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                out_of_time = time.perf_counter() - started > self.budget_seconds
                if step % checks == 0 or out_of_time:
                    val_loss = self._validation_loss(rows[val_rows], labels[val_rows], loss_fn)
                    history.append({"step": step, "epoch": step / steps_per_epoch, "validation_loss": val_loss,
                                    "seconds": round(time.perf_counter() - started, 1)})
                    if val_loss < best_loss:
                        best_loss, best_state = val_loss, copy.deepcopy(self.network_.state_dict())
                if out_of_time:
                    break
            if out_of_time:
                break
        if best_state is not None:
            self.network_.load_state_dict(best_state)
        self.network_.eval()
        self.history_, self.epochs_seen_ = history, step / steps_per_epoch
        log.info("fine-tuned MiniLM: %.2f epochs of %d rows in %.0fs on %s, best validation loss %.4f",
                 self.epochs_seen_, len(fit_rows), time.perf_counter() - started, self.device_, best_loss)
        return self

    def _build(self, n_classes: int) -> None:
        self.tokenizer_, encoder = load_minilm(self.model)
        self.device_ = torch_device(self.device, "classifier.finetune.device")
        self.network_ = _Classifier(encoder, n_classes).to(self.device_)
        self.network_.freeze_bottom(self.frozen_layers)

    def _validation_split(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows to train on and rows for early stopping, stratified when every genre can be split."""
        positions = np.arange(len(labels))
        size = max(1, round(len(labels) * self.validation_fraction))
        stratify = labels if np.bincount(labels).min() >= 2 and size >= len(self.classes_) else None
        fit_rows, val_rows = train_test_split(positions, test_size=size, stratify=stratify, random_state=self.seed)
        return np.sort(fit_rows), np.sort(val_rows)

    def _validation_loss(self, rows: np.ndarray, labels: np.ndarray, loss_fn: object) -> float:
        import torch

        logits = torch.as_tensor(self._predict_logits(rows), device=self.device_)
        return float(loss_fn(logits, torch.as_tensor(labels, device=self.device_)))

    # -- inference ---------------------------------------------------------------------------
    def _autocast(self):
        import torch

        return torch.autocast(self.device_, dtype=torch.bfloat16)

    def _logits(self, rows: np.ndarray):
        titles = [str(title) for title in rows[:, 0]]
        authors = [str(author) for author in rows[:, 1]]
        batch = self.tokenizer_(titles, authors, padding=True, truncation=True,
                                max_length=self.max_tokens, return_tensors="pt").to(self.device_)
        return self.network_(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def _batches(self, rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
        """Shortest rows first: padding to the longest in a batch is what costs at inference."""
        order = np.argsort([len(str(t)) + len(str(a)) for t, a in rows], kind="stable")
        for start in range(0, len(order), size):
            yield order[start:start + size]

    def _predict_logits(self, rows: np.ndarray) -> np.ndarray:
        import torch

        rows = np.asarray(rows, dtype=object).reshape(-1, 2)
        logits = np.zeros((len(rows), len(self.classes_)), dtype=np.float32)
        self.network_.eval()
        with torch.inference_mode(), self._autocast():
            for index in self._batches(rows, 256):
                logits[index] = self._logits(rows[index]).float().cpu().numpy()
        return logits

    def decision_function(self, rows: np.ndarray) -> np.ndarray:
        """Logits: the calibration's temperature is fitted on these, as for the SVM's margins."""
        return self._predict_logits(rows)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.classes_[self._predict_logits(rows).argmax(axis=1)]

    # -- pickling ----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, object]:
        """Weights (as NumPy arrays, not torch objects), config and tokenizer travel inside the pickle,
        so any machine can load it, with or without a GPU."""
        state = dict(self.__dict__)
        network = state.pop("network_", None)
        if network is not None:
            state["weights_"] = {key: value.detach().float().cpu().numpy() for key, value in network.state_dict().items()}
            state["encoder_config_"] = network.encoder.config.to_dict()
            state["n_outputs_"] = network.head.out_features
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        weights = state.pop("weights_", None)
        config = state.pop("encoder_config_", None)
        n_outputs = state.pop("n_outputs_", None)
        self.__dict__.update(state)
        if weights is not None:
            import torch
            from transformers import AutoConfig, AutoModel

            encoder = AutoModel.from_config(AutoConfig.for_model(**config))
            self.device_ = torch_device("auto", "classifier.finetune.device")  # wherever it is loaded
            self.network_ = _Classifier(encoder, n_outputs)
            self.network_.load_state_dict({key: torch.as_tensor(value) for key, value in weights.items()})
            self.network_.to(self.device_).eval()


@functools.cache
def _classifier_module() -> type:
    import torch

    class Classifier(torch.nn.Module):
        """The encoder, a masked mean pool (what MiniLM was trained to embed with) and a linear head."""

        def __init__(self, encoder: torch.nn.Module, n_classes: int) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(encoder.config.hidden_size, n_classes)

        def freeze_bottom(self, layers: int) -> None:
            """Embeddings and the first `layers` layers stay pretrained when layers > 0."""
            if layers <= 0:
                return
            for parameter in self.encoder.embeddings.parameters():
                parameter.requires_grad = False
            for layer in self.encoder.encoder.layer[:layers]:
                for parameter in layer.parameters():
                    parameter.requires_grad = False

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask[..., None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return self.head(self.dropout(pooled))

    return Classifier


def _Classifier(encoder: object, n_classes: int) -> object:
    """Built lazily so importing this module (and unpickling other candidates) never imports torch."""
    return _classifier_module()(encoder, n_classes)
