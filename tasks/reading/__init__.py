"""Reading covers: the text a cover prints (title, author) as a signal for search, identification and genre."""
