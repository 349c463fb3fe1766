"""`captioner serve`: a local web page and JSON API that caption uploaded photos and show where the model looked.

    captioning.py  the bounded pool of worker processes that caption one upload each (the NumPy model: no
                   TensorFlow), and what makes an upload bad
    app.py         the Starlette application: the page, the API, admission (a bounded queue, then 503),
                   time limits and clear JSON errors
    static/        the page; the attention drawing comes from captioner/visualize/static, shared with the
                   HTML report
"""
