"""Feature blocks shared by the genre candidates: title word and character n-grams, author names,
and MiniLM sentence embeddings of the title.

Every block is fitted once on the training split and its matrix reused by every candidate and
every CV fold: the text is tokenised once instead of once per candidate per fold. Fitting uses
the titles only, never the genres, so CV folds see no label of the fold they are scored on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from tasks.genre.words import CharNgramVectorizer, TitleWords, WordNgramVectorizer, as_title_words, word_matrix, word_rows
from tasks.platform.pretrained import BUNDLED_MINILM, load_minilm, minilm_path, torch_device

log = logging.getLogger(__name__)

_ISOLATED_VECTORS: dict[tuple[str, str], np.ndarray] = {}  # filled on first use, per process
BLOCK_NAMES = ("title_words", "title_chars", "author", "title_embedding", "title_author_text")
MAX_TITLE_TOKENS = 48


def author_tokens(author: str) -> list[str]:
    """The author's name parts and whole name as features, plus one token every row has.

    The constant token keeps the vocabulary non-empty when a listing has no authors at all
    (the 'Category,Title' table), where a plain vectorizer would refuse to fit.
    """
    parts = [part for part in re.findall(r"\w+", author.lower()) if len(part) > 1]
    return ["<any>", *(f"part:{part}" for part in parts), *([f"name:{' '.join(parts)}"] if parts else [])]


def _autocast(device: str):
    import torch

    return torch.autocast(device, dtype=torch.bfloat16)


class SentenceEncoder(BaseEstimator, TransformerMixin):
    """L2-normalised MiniLM embeddings of titles.

    `contextual` runs the whole transformer on every title (bf16 autocast): the most accurate, and
    ~850 titles/s on 2 CPU cores. `static` distils it once into one vector per word piece: each
    piece's transformer output averaged over the training titles it occurs in (alone when it
    never occurs), then a title is the IDF-weighted mean of its pieces. That keeps MiniLM's
    pretrained knowledge of words at >50,000 titles/s, which is what labeling at scale needs.
    """

    def __init__(self, model: str = BUNDLED_MINILM, mode: str = "static", distill_titles: int = 20000,
                 batch_size: int = 256, seed: int = 0) -> None:
        self.model = model
        self.mode = mode
        self.distill_titles = distill_titles
        self.batch_size = batch_size
        self.seed = seed

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, titles: Sequence[str], y: object = None) -> SentenceEncoder:
        if self.mode not in ("static", "contextual"):
            raise ValueError(f"sentence encoder mode must be static or contextual, got {self.mode!r}")
        self._load_transformer()
        if self.mode == "static":
            started = time.perf_counter()
            titles = list(titles)
            self.tokenizer_json_ = self.tokenizer_.backend_tokenizer.to_str()
            for cache in ("word_index_", "word_pieces_", "fast_tokenizer_"):  # a refit starts from nothing
                self.__dict__.pop(cache, None)
            self.vectors_ = self._distilled_vectors(titles)
            counts = self._piece_counts(titles)
            document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
            self.idf_ = (np.log((1 + len(titles)) / (1 + document_frequency)) + 1).astype(np.float32)
            del self.encoder_  # the distilled vectors replace it; free its memory for the candidates
            log.info("static MiniLM vectors distilled from %d titles in %.1fs", min(len(titles), self.distill_titles),
                     time.perf_counter() - started)
        return self

    def _load_transformer(self) -> None:
        self.tokenizer_, encoder = load_minilm(self.model)
        self.device_ = torch_device("auto", "classifier.sentence_encoder")
        self.encoder_ = encoder.eval().to(self.device_)

    def _contextual_batches(self, titles: list[str]):
        """(input ids, attention mask, last hidden states) per batch, shortest titles first."""
        import torch

        order = np.argsort([len(t) for t in titles], kind="stable")
        with torch.inference_mode(), _autocast(self.device_):
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                batch = self.tokenizer_([titles[i] for i in index], padding=True, truncation=True,
                                        max_length=MAX_TITLE_TOKENS, return_tensors="pt").to(self.device_)
                hidden = self.encoder_(**batch).last_hidden_state.float()
                yield index, batch["input_ids"], batch["attention_mask"], hidden

    def _distilled_vectors(self, titles: list[str]) -> np.ndarray:
        import torch

        vocabulary = self.encoder_.config.vocab_size
        vectors = self._isolated_piece_vectors(vocabulary)
        rng = np.random.default_rng(self.seed)
        sample = [titles[i] for i in rng.permutation(len(titles))[:self.distill_titles]]
        sums = torch.zeros(vocabulary, vectors.shape[1], device=self.device_)
        counts = torch.zeros(vocabulary, device=self.device_)
        for _, ids, mask, hidden in self._contextual_batches(sample):
            inside = mask.bool() & (ids != self.tokenizer_.cls_token_id) & (ids != self.tokenizer_.sep_token_id)
            sums.index_add_(0, ids[inside], hidden[inside])
            counts.index_add_(0, ids[inside], torch.ones(int(inside.sum()), device=self.device_))
        seen = (counts > 0).cpu().numpy()
        vectors[seen] = (sums[counts > 0] / counts[counts > 0, None]).cpu().numpy()
        return vectors.astype(np.float32)

    def _isolated_piece_vectors(self, vocabulary: int) -> np.ndarray:
        """Each word piece's output with no context ([CLS] piece [SEP]): the fallback for unseen pieces.

        They depend on the encoder only, so one process computes them once per encoder.
        """
        key = (minilm_path(self.model), self.device_)
        if key not in _ISOLATED_VECTORS:
            _ISOLATED_VECTORS[key] = self._compute_isolated_piece_vectors(vocabulary)
        return _ISOLATED_VECTORS[key].copy()

    def _compute_isolated_piece_vectors(self, vocabulary: int) -> np.ndarray:
        import torch

        tokenizer, parts = self.tokenizer_, []
        with torch.inference_mode(), _autocast(self.device_):
            for start in range(0, vocabulary, 2048):
                ids = torch.arange(start, min(start + 2048, vocabulary), device=self.device_)[:, None]
                inputs = torch.cat([torch.full_like(ids, tokenizer.cls_token_id), ids,
                                    torch.full_like(ids, tokenizer.sep_token_id)], dim=1)
                parts.append(self.encoder_(input_ids=inputs, attention_mask=torch.ones_like(inputs))
                             .last_hidden_state[:, 1].float().cpu().numpy())
        return np.concatenate(parts)

    # -- transforming ------------------------------------------------------------------------
    def _tokenize(self, words: list[str]) -> sp.csr_matrix:
        """Word x word-piece counts from the fast tokenizer."""
        from tokenizers import Tokenizer

        if not hasattr(self, "fast_tokenizer_"):
            self.fast_tokenizer_ = Tokenizer.from_str(self.tokenizer_json_)
            self.fast_tokenizer_.no_padding()
            self.fast_tokenizer_.no_truncation()
        encodings = self.fast_tokenizer_.encode_batch(words, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        columns = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int32, count=int(lengths.sum()))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return sp.csr_matrix((np.ones(len(columns), np.float32), columns, indptr), shape=(len(words), self.vectors_.shape[0]))

    def _piece_counts(self, titles: Sequence[str] | TitleWords) -> sp.csr_matrix:
        """Title x word-piece counts, through the title's words: BERT's tokenizer splits on whitespace
        first, so tokenizing each distinct word once gives the same pieces at a fraction of the cost."""
        if not hasattr(self, "word_index_"):
            words: dict[str, int] = {}
            title_words = word_matrix(titles, {}, words)
            self.word_index_, self.word_pieces_ = words, self._tokenize(list(words))
            return (title_words @ self.word_pieces_).tocsr()
        batch = as_title_words(titles)
        rows, new = word_rows(batch.words, self.word_index_)
        pieces = self.word_pieces_ if not new else sp.vstack([self.word_pieces_, self._tokenize(new)], format="csr")
        return (batch.onto(rows, pieces.shape[0]) @ pieces).tocsr()

    @property
    def reads_title_words(self) -> bool:
        """The static encoder works word by word and can share a batch's word split; the contextual one reads text."""
        return self.mode == "static"

    def transform(self, titles: Sequence[str] | TitleWords) -> np.ndarray:
        if self.mode == "static":
            weighted = self._piece_counts(titles).multiply(self.idf_).tocsr()
            embeddings = np.asarray(weighted @ self.vectors_, dtype=np.float32)
        else:
            titles = [str(t) for t in titles]
            if not hasattr(self, "encoder_"):
                self._load_transformer()
            embeddings = np.zeros((len(titles), self.encoder_.config.hidden_size), dtype=np.float32)
            for index, _, mask, hidden in self._contextual_batches(titles):
                mask = mask[..., None].float()
                embeddings[index] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy()
        norms = np.sqrt(np.einsum("ij,ij->i", embeddings, embeddings))[:, None]  # no squared copy of the matrix
        embeddings /= np.maximum(norms, 1e-9)
        return embeddings

    def __getstate__(self) -> dict[str, object]:
        """Pickle the distilled vectors, not the transformer: the registered model stays small."""
        state = dict(self.__dict__)
        for heavy in ("encoder_", "tokenizer_", "fast_tokenizer_"):
            state.pop(heavy, None)
        if self.mode == "static":
            state.pop("device_", None)
        return state


def block_transformer(name: str, settings: object) -> TransformerMixin:
    """An unfitted transformer for one feature block; `settings` is the classifier section."""
    if name == "title_words":
        return WordNgramVectorizer(min_df=2, max_features=settings.word_ngram_features)
    if name == "title_chars":
        return CharNgramVectorizer((2, 5), min_df=3, max_features=settings.char_ngram_features)
    if name == "author":
        return TfidfVectorizer(analyzer=author_tokens, min_df=2, dtype=np.float32)
    if name == "title_embedding":
        return SentenceEncoder(settings.sentence_encoder, settings.sentence_encoder_mode,
                               settings.distill_titles, seed=settings.seed)
    if name == "title_author_text":
        return TextPairs()
    raise ValueError(f"unknown feature block {name!r}; choose from {', '.join(BLOCK_NAMES)}")


BLOCK_COLUMN = {"title_words": "title", "title_chars": "title", "author": "author", "title_embedding": "title",
                "title_author_text": ["title", "author"]}


class TextPairs(BaseEstimator, TransformerMixin):
    """The raw (title, author) pairs, for a candidate that tokenizes text itself (the fine-tuned MiniLM)."""

    def fit(self, pairs: Sequence[Sequence[str]], y: object = None) -> TextPairs:
        return self

    def transform(self, pairs: Sequence[Sequence[str]]) -> np.ndarray:
        return np.asarray(pairs, dtype=object).reshape(-1, 2)


def block_input(frame: pd.DataFrame, name: str) -> list | np.ndarray:
    """What a block's transformer reads: one text column as a list, or several as an object array of rows."""
    columns = BLOCK_COLUMN[name]
    if isinstance(columns, str):
        return frame[columns].tolist()
    return frame[columns].to_numpy(dtype=object)


class TextBatch:
    """One frame being predicted: its title word split and each fitted block's matrix, computed once
    however many blocks and ensemble members read them (members of an ensemble share fitted blocks)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._title_words: TitleWords | None = None
        self._blocks: dict[int, object] = {}

    @property
    def title_words(self) -> TitleWords:
        if self._title_words is None:
            self._title_words = TitleWords.of(self.frame["title"].tolist())
        return self._title_words

    def block(self, name: str, transformer: TransformerMixin) -> object:
        key = id(transformer)  # the transformer outlives the batch, so its id stays its own
        if key not in self._blocks:
            if BLOCK_COLUMN[name] == "title" and getattr(transformer, "reads_title_words", False):
                self._blocks[key] = transformer.transform(self.title_words)
            else:
                self._blocks[key] = transform_distinct(transformer, block_input(self.frame, name))
        return self._blocks[key]


def as_batch(frame: pd.DataFrame | TextBatch) -> TextBatch:
    return frame if isinstance(frame, TextBatch) else TextBatch(frame)


def transform_distinct(transformer: TransformerMixin, values: list | np.ndarray) -> object:
    """A text column with many repeats (authors) transformed once per distinct value, rows picked after."""
    if not isinstance(values, list):
        return transformer.transform(values)
    codes, distinct = pd.factorize(pd.Series(values, dtype=object), sort=False)
    if len(distinct) > len(values) // 2:
        return transformer.transform(values)
    return transformer.transform(list(distinct))[codes]


class FeatureBlocks:
    """Fitted block transformers; turns a title/author frame into the matrices a candidate reads."""

    def __init__(self, transformers: dict[str, TransformerMixin]) -> None:
        self.transformers = transformers

    @classmethod
    def fit(cls, frame: pd.DataFrame, names: Sequence[str], settings: object) -> tuple[FeatureBlocks, dict[str, object]]:
        """Fit every block once; return the blocks and their matrices on `frame`."""
        transformers, matrices = {}, {}
        for name in names:
            started = time.perf_counter()
            transformer = block_transformer(name, settings)
            matrices[name] = transformer.fit_transform(block_input(frame, name))
            transformers[name] = transformer
            log.info("feature block %s: %s in %.1fs", name, matrices[name].shape, time.perf_counter() - started)
        return cls(transformers), matrices

    def subset(self, names: Sequence[str]) -> FeatureBlocks:
        return FeatureBlocks({name: self.transformers[name] for name in names})

    def transform_blocks(self, frame: pd.DataFrame | TextBatch) -> list[object]:
        """Each block's matrix, in order, from the batch's shared work."""
        batch = as_batch(frame)
        return [batch.block(name, transformer) for name, transformer in self.transformers.items()]

    def transform(self, frame: pd.DataFrame | TextBatch) -> object:
        return stack(self.transform_blocks(frame))


def stack_blocks(matrices: dict[str, object], names: Sequence[str]) -> object:
    """The named blocks' matrices side by side, in the order given."""
    return stack([matrices[name] for name in names])


def stack(matrices: list[object]) -> object:
    """One block as it is (dense embeddings stay dense); several side by side as sparse CSR."""
    if len(matrices) == 1:
        return matrices[0]
    return sp.hstack([m if sp.issparse(m) else sp.csr_matrix(m) for m in matrices], format="csr")
