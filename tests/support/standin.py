"""The stand-in's credentials in tests: a token the `replicate` client sends, its webhook secret."""

STANDIN_TOKEN = "r8_test_token"
STANDIN_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
