"""What the tests share: commands run as a user runs them, loopback servers, signed
deliveries, the stand-in's credentials, reference texts. Test modules import from here, never
from each other."""
