"""Decoding: CTC greedy and n-gram LM beam search (:mod:`.ctc`), ARPA n-gram LMs (:mod:`.ngram`).

Submodules are imported explicitly; nothing heavy is imported with the package.
"""
