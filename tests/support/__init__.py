"""What the tests share: commands run as a user runs them, loopback servers, signed
deliveries, the stand-in's credentials, reference texts. Test modules import from here, never
from each other."""

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"  # reference files copied in, see SOURCES.md
