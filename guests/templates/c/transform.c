// __NAME__: drops deletes, passes everything else on unchanged.
// The batch is this module's memory: kept changes move to the result, dropped ones
// are freed with the generated helper; the host frees the result after the call.
#include <stdlib.h>
#include "transform.h"

bool exports_cdc_pipeline_transformer_init(transform_list_tuple2_string_string_t *config,
                                           transform_string_t *err) {
  transform_list_tuple2_string_string_free(config);
  return true;
}

bool exports_cdc_pipeline_transformer_transform(
    exports_cdc_pipeline_transformer_list_change_t *changes,
    exports_cdc_pipeline_transformer_list_change_t *ret, transform_string_t *err) {
  size_t kept = 0;
  for (size_t i = 0; i < changes->len; i++) {
    cdc_pipeline_types_change_t *c = &changes->ptr[i];
    if (c->op == CDC_PIPELINE_TYPES_OP_DELETE) {
      cdc_pipeline_types_change_free(c);
    } else {
      changes->ptr[kept++] = *c;
    }
  }
  ret->ptr = changes->ptr;
  ret->len = kept;
  return true;
}
