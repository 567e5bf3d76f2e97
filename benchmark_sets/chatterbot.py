"""``chatterbot-qa``: question -> answer retrieval over the dialogues of the `chatterbot-corpus` package.

Query: a turn of a dialogue; relevant documents: every turn that follows it somewhere in the language (score 1).
Small and chatty: a smoke test. The corpus is read by `corpora.chatterbot`, which the trainer reads too.

The questions are split by a hash of their text (`corpora.chatterbot.question_split`, which the trainer's embedded
corpus uses too): a held-out share (`eval_fraction`) becomes the evaluation pairs, of which a third is a dev split
for choosing checkpoints and settings, the rest the test split. The unlabelled text is every utterance that appears
in no held-out pair, so a model trained on it has never seen an evaluation query or document.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from corpora.chatterbot import (
    EVAL_FRACTION,
    chatterbot_languages,
    held_out_texts,
    question_split,
    read_chatterbot_language,
)
from evaluation.data import write_beir

from .common import DEV_DIR, UNLABELLED_DIR, dedup, render_readme, write_lines

logger = logging.getLogger(__name__)

# With 50 deduplicated question -> answer pairs, 20 of the 28 languages of chatterbot-corpus 1.3.3 qualify (the
# smallest, Russian, with 63 pairs and 58 queries); the next ones down have 46 (Yoruba) and 44 (Tamil). Below ~50
# queries one query changing rank moves a score by several points: too noisy even for a smoke test.
CHATTERBOT_MIN_PAIRS = 50
CHATTERBOT_EVAL_FRACTION = EVAL_FRACTION

CHATTERBOT_LICENSE = """\
The dialogues come from chatterbot-corpus (https://github.com/gunthercox/chatterbot-corpus), licensed under the
BSD 3-Clause licence:

Copyright (c) 2017, Gunther Cox All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted provided that the
following conditions are met:

    Redistributions of source code must retain the above copyright notice, this list of conditions and the
    following disclaimer.

    Redistributions in binary form must reproduce the above copyright notice, this list of conditions and the
    following disclaimer in the documentation and/or other materials provided with the distribution.

    Neither the name of chatterbot nor the names of its contributors may be used to endorse or promote products
    derived from this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES,
INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY,
WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""


def dialogue_retrieval_set(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Turn (question, answer) pairs into a deduplicated retrieval set.

    Queries and documents are deduplicated by their exact (whitespace-normalised) text; a question with several
    answers gets all of them as relevant (score 1). Ids follow first appearance: ``q0, q1, ...`` and ``d0, d1, ...``.

    Args:
        pairs: (question, answer) pairs.

    Returns:
        queries, corpus, qrels.
    """
    query_ids: dict[str, str] = {}
    doc_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for question, answer in pairs:
        qid = query_ids.setdefault(question, f"q{len(query_ids)}")
        did = doc_ids.setdefault(answer, f"d{len(doc_ids)}")
        qrels.setdefault(qid, {})[did] = 1
    queries = {qid: text for text, qid in query_ids.items()}
    corpus = {did: text for text, did in doc_ids.items()}
    return queries, corpus, qrels


def build_chatterbot(
    output_dir: str | Path,
    min_pairs: int = CHATTERBOT_MIN_PAIRS,
    data_dir: str | Path | None = None,
    eval_fraction: float = CHATTERBOT_EVAL_FRACTION,
) -> dict[str, dict[str, int]]:
    """Build the chatterbot-corpus question -> answer retrieval benchmark.

    Writes ``<output_dir>/<lang>/{queries.jsonl,corpus.jsonl,qrels.tsv}`` (the test split) for every language with
    at least `min_pairs` deduplicated test pairs, the dev split of the same languages under
    ``<output_dir>/dev/<lang>/``, ``<output_dir>/unlabelled/<lang>.txt`` (the deduplicated utterances of every
    language that appear in no held-out pair, one per line, for pretraining), ``LICENSE`` and ``README.md``.

    Args:
        output_dir: target folder (created; files of the same names are overwritten).
        min_pairs: smallest number of deduplicated test pairs (qrels lines) for a language to get a benchmark folder.
        data_dir: the corpus' ``data`` folder; defaults to the installed package's.
        eval_fraction: share of the questions held out for evaluation (dev and test).

    Returns:
        Counts per language code, sorted: ``pairs`` (deduplicated test pairs, i.e. qrels lines), ``queries``,
        ``documents`` (all 0 for a language below the threshold, which gets only unlabelled text), ``dev_queries``
        and ``unlabelled`` (lines).
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}.")
    languages = chatterbot_languages(data_dir)
    output_dir = Path(output_dir)
    counts: dict[str, dict[str, int]] = {}
    for code, folder in languages.items():
        data = read_chatterbot_language(folder)
        splits: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
        for question, answer in data.pairs:
            splits[question_split(question, eval_fraction)].append((question, answer))
        held_out = held_out_texts(data, eval_fraction)
        unlabelled_text = [text for text in dedup(data.utterances) if text not in held_out]
        unlabelled = write_lines(output_dir / UNLABELLED_DIR / f"{code}.txt", unlabelled_text)
        queries, corpus, qrels = dialogue_retrieval_set(splits["test"])
        num_pairs = sum(len(docs) for docs in qrels.values())
        if num_pairs >= min_pairs:
            write_beir(output_dir / code, queries, corpus, qrels)
            dev_queries, dev_corpus, dev_qrels = dialogue_retrieval_set(splits["dev"])
            write_beir(output_dir / DEV_DIR / code, dev_queries, dev_corpus, dev_qrels)
            counts[code] = {"pairs": num_pairs, "queries": len(queries), "documents": len(corpus)}
            counts[code]["dev_queries"] = len(dev_queries)
        else:
            logger.info("%s (%s): %d pairs < %d, unlabelled text only", code, folder.name, num_pairs, min_pairs)
            counts[code] = {"pairs": num_pairs, "queries": 0, "documents": 0, "dev_queries": 0}
        counts[code]["unlabelled"] = unlabelled
    counts = dict(sorted(counts.items()))
    benchmark = {code: c for code, c in counts.items() if c["queries"]}
    if not benchmark:
        raise ValueError(f"No chatterbot-corpus language has {min_pairs} pairs: lower --min-pairs.")
    (output_dir / "LICENSE").write_text(CHATTERBOT_LICENSE, encoding="utf-8")
    readme = render_readme(
        title="chatterbot-corpus question -> answer retrieval",
        description=(
            "Query: a turn of a chatterbot-corpus dialogue; relevant documents: every turn that follows it somewhere "
            f"in the held-out dialogue pairs (score 1). {eval_fraction:.0%} of the questions (by a hash of their "
            f"text) are held out: a third of them form the dev split (`dev/<lang>/`), the rest the test split "
            f"(`<lang>/`). Queries and documents are deduplicated by exact text. Languages with at least {min_pairs} "
            "deduplicated test pairs get a benchmark folder (the others show 0 queries); `unlabelled/<lang>.txt` "
            "holds the deduplicated utterances of every language that appear in no held-out pair, so training on it "
            "never shows an evaluation query or document. Built from the installed chatterbot-corpus package with "
            "`automlm-build-benchmark chatterbot`."
        ),
        counts=counts,
        licence="BSD-3-Clause, see LICENSE.",
    )
    (output_dir / "README.md").write_text(readme, encoding="utf-8")
    logger.info("Wrote the chatterbot benchmark for %d languages to %s", len(benchmark), output_dir)
    return counts
