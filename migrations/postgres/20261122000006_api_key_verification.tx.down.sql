DROP FUNCTION api_key_verification(text);
