"""Operations on the request path, shared by every door: identity, permissions, rate limits.

No transport imports. A door calls ``Gate`` once per request (identity → permission → rate limit) before it decodes
anything, then the ``InferenceService`` (decode → batch), then records the request (access log).
"""
