"""The stand-in's credentials in tests: a token the `replicate` client sends, its webhook secret,
and the environment that points our scripts and the `replicate` client at a stand-in."""

STANDIN_TOKEN = "r8_test_token"
STANDIN_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


def standin_env(base_url: str) -> dict[str, str]:
    """REPLICATE_API_TOKEN and REPLICATE_BASE_URL for the stand-in at `base_url`."""
    return {"REPLICATE_API_TOKEN": STANDIN_TOKEN, "REPLICATE_BASE_URL": base_url}
