// identity-batch: passes every batch on unchanged, in world `transform-batch`.
//
// The batch stays in the host (wit/batch.wit): `transform` receives only a
// borrowed handle to it and returns ok without calling a method, so a batch
// costs one call whatever its size. The generated export wrapper drops the
// borrowed handle after `transform` returns (c-guest-tool generates the
// bindings with autodrop of borrows): the module never drops it itself.
#include "transform_batch.h"

bool exports_cdc_pipeline_batch_transformer_init(transform_batch_list_tuple2_string_string_t *config,
                                                 transform_batch_string_t *err) {
  (void)err;
  transform_batch_list_tuple2_string_string_free(config);  // init owns its argument
  return true;
}

bool exports_cdc_pipeline_batch_transformer_transform(
    exports_cdc_pipeline_batch_transformer_borrow_changes_t changes, transform_batch_string_t *err) {
  (void)changes;  // lent for this call only
  (void)err;
  return true;  // ok: the batch goes on as it came in
}
