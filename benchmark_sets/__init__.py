"""Builders of the multilingual retrieval benchmarks, in BEIR layout, from data the project can get offline.

One module per source, each writing one BEIR folder per language (``queries.jsonl``, ``corpus.jsonl``,
``qrels.tsv``) plus the unlabelled text the trainer can pretrain on (``unlabelled/<lang>.txt``) and a ``README.md``
with the counts and the licence notices of the source:

- `benchmark_sets.chatterbot`: ``chatterbot-qa``, the dialogues of the `chatterbot-corpus` package (BSD-3-Clause).
  Query: a turn; relevant documents: the turns that answer it. Small and chatty, a smoke test.
- `benchmark_sets.debian_reference` and `benchmark_sets.libreoffice_help`: translated documentation from Debian
  packages (built by `benchmark_sets.translated_docs`, parsed by `benchmark_sets.html_sections`). Query: the title
  of a section or page; relevant document: its text. Ids are shared by all the translations, so the same folders
  also serve a cross-lingual run.
- `benchmark_sets.common`: what every builder writes besides the BEIR folders (`evaluation.data.write_beir`).
- `benchmark_sets.cli`: ``automlm-build-benchmark``.

See ``docs/DATASETS.md`` for what each set holds and the counts per language.
"""
