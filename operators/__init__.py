"""Thin Airflow adapters around the narration worker CLI and core library."""
