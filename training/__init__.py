"""Self-supervised Auto-MLM pretraining: from unlabelled text to a Hub-ready folder (`automlm-train`).

`arguments` (the settings), `data` (corpora, sampling, the collator), `model` (the model and tokenizer a run trains),
`train` (the accelerate loop), `gradcache` (large contrastive batches in small memory), `checkpoints`, `health`
(alignment and uniformity) and `export` (the sentence-transformers folders).
"""
