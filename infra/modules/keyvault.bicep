// Key Vault (RBAC only, purge protection) holding the four secrets; the app reads them through
// Key Vault references, never as plain app settings.

param location string
param tags object
param resourceToken string

@description('Principal id of the function app identity: it reads the secrets, nothing more.')
param identityPrincipalId string

@description('Log Analytics workspace that receives the vault audit logs.')
param workspaceId string

@secure()
param graphClientSecret string

@secure()
param enrollioSharedSecret string

@secure()
param tokenEncryptionKeys string

@description('whsec_ secret the events to Enrollio are signed with; empty when events are off.')
@secure()
param enrollioEventsSecret string = ''

// Built-in role: Key Vault Secrets User (read secret values).
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: without VNet integration App Service resolves Key Vault references over the public endpoint; access is RBAC-only.
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109.
  name: 'kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource graphClientSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: rotation is the operator's (README.md, Deploy to Azure); the Entra client secret carries its own expiry, and a vault-side one would stop sign-ins when it passes.
  parent: vault
  name: 'graph-client-secret'
  properties: {
    value: graphClientSecret
    contentType: 'text/plain'
  }
}

resource enrollioSharedSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: rotation is agreed with Enrollio (README.md, Deploy to Azure); a vault-side expiry would make every signature check fail when it passes.
  parent: vault
  name: 'enrollio-shared-secret'
  properties: {
    value: enrollioSharedSecret
    contentType: 'text/plain'
  }
}

resource enrollioEventsSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: rotation is agreed with Enrollio (README.md, Events to Enrollio); a vault-side expiry would stop every event delivery when it passes.
  parent: vault
  name: 'enrollio-events-secret'
  properties: {
    // Without events (ENROLLIO_EVENTS_URL empty) nothing reads it; 'unset' keeps the reference resolvable, and should
    // the URL be set without a secret, the app's settings check names ENROLLIO_EVENTS_SECRET (not whsec_).
    value: empty(enrollioEventsSecret) ? 'unset' : enrollioEventsSecret
    contentType: 'text/plain'
  }
}

resource tokenEncryptionKeysValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: keys rotate by adding one in front (old keys still decrypt); a vault-side expiry would make every stored token cache unreadable.
  parent: vault
  name: 'token-encryption-keys'
  properties: {
    value: tokenEncryptionKeys
    contentType: 'text/plain'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output vaultName string = vault.name
// Secret URIs without a version: App Service picks up a rotated value without a redeploy.
output graphClientSecretUri string = graphClientSecretValue.properties.secretUri
output enrollioSharedSecretUri string = enrollioSharedSecretValue.properties.secretUri
output tokenEncryptionKeysUri string = tokenEncryptionKeysValue.properties.secretUri
output enrollioEventsSecretUri string = enrollioEventsSecretValue.properties.secretUri
