"""Learners and tasks from names and files: ``fs.load`` / ``fs.create`` (``zoo``), ``fs.load_task``."""
