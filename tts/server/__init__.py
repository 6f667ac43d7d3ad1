"""tts/server"""
