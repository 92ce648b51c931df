"""Models: speech encoder (wav2vec2 / XLS-R), bottleneck adapters, attention pooling, the SAMU
distillation model, the CTC model, and safe offline loading helpers.

Import the submodules directly (``from samu_st.models.encoder import SpeechEncoder``); this
package imports nothing heavy on its own.
"""
