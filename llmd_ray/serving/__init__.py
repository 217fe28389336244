"""Ray Serve deployments (LLMServer, OpenAIIngress) and app builders."""
