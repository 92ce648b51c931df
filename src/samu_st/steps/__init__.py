"""The method's steps as library functions: each builds its model, data stream and task, then
runs the one training loop (:func:`samu_st.training.loop.train`)."""
