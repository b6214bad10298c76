"""Emoji sources. Each function yields ``EmojiRecord`` or ``SkippedItem`` and decodes lazily."""
