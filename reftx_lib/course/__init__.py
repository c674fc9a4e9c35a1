"""What runs the course: ``presets`` (training budgets: smoke, cpu, full, gpu, and their dry runs),
``experiments`` (each notebook's data and model recipe, so a notebook and the command line build the
same run), ``notebook`` (the set-up cell every notebook calls), ``report`` (has each curve flattened, its
tokens/s and share of the matmul peak), ``sweep`` (learning per CPU-minute), ``results`` (stored results
with provenance, and the README's table) and ``runner`` (every notebook executed headlessly with
papermill). It may import every other package except ``bench``.
"""
