"""What the molecule tests hear in the demo upstream's audio."""
