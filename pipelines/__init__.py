"""Dagster orchestration for perkflow. Assets call the engine; no engine logic lives here."""
