"""narration: text manifests to narrated audio with word-accurate timings and subtitles.

The core library is Airflow-free so that worker images import it without Airflow installed.
"""

__version__ = "0.1.0"
