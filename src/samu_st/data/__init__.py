"""Data layer: manifests, importers, the mini-CoVoST corpus, batch sampling and collation."""
