"""Pictures of attention: per-word overlays on the photo and the self-contained HTML report (utils only)."""
